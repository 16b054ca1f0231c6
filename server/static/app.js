// vtsearch web page: search box, dense grid, large view, heatmaps. No framework, no build step.
// The query lives in the address (/?q=..., /?similar=ID, /?view=dupes), so a search can be
// bookmarked; so do the filters (&after=...&in=...&orientation=...&tag=..., the API's own
// parameters).
"use strict";

(() => {
  // Results per request (a test may set window.VTSEARCH_PAGE_SIZE before the page loads).
  const PAGE = Number(window.VTSEARCH_PAGE_SIZE) || 60;
  const $ = (sel) => document.querySelector(sel);

  const el = {
    form: $("#search-form"),
    q: $("#q"),
    pick: $("#pick"),
    dupes: $("#dupes"),
    dupeGroups: $("#dupe-groups"),
    status: $("#status"),
    reindex: $("#reindex"),
    progress: $("#index-progress"),
    indexText: $("#index-text"),
    message: $("#message"),
    messageText: $("#message-text"),
    messageClose: $("#message-close"),
    summary: $("#summary"),
    grid: $("#grid"),
    gridEnd: $("#grid-end"),
    more: $("#more"),
    drop: $("#drop"),
    viewer: $("#viewer"),
    stage: $("#stage"),
    viewerBody: $("#viewer-body"),
    img: $("#viewer-img"),
    heatmap: $("#heatmap"),
    prev: $("#prev"),
    next: $("#next"),
    close: $("#close"),
    position: $("#position"),
    name: $("#meta-name"),
    meta: $("#meta"),
    similar: $("#more-like-this"),
    why: $("#why"),
    openFile: $("#open-file"),
    words: $("#words"),
    whyMessage: $("#why-message"),
    fAfter: $("#f-after"),
    fUntil: $("#f-until"),
    fRoot: $("#f-root"),
    fSub: $("#f-sub"),
    fOrientation: $("#f-orientation"),
    fTag: $("#f-tag"),
    fTagLabel: $("#f-tag-label"),
    filters: $("#filters"),
    fClear: $("#f-clear"),
  };

  // The search filters the API takes; the bar sets five of them, the others pass through from
  // the address (a bookmark with &min_width=2000 keeps it).
  const FILTER_KEYS = ["in", "glob", "after", "before", "orientation", "min_width", "min_height",
    "file_type", "tag", "min_score"];

  const state = {
    // {kind: "text", q} | {kind: "similar", id, name} | {kind: "image", file, key} | {kind: "dupes"}
    mode: null,
    results: [], // the grid's results, or the duplicate groups' files, in order
    ids: new Set(),
    hasMore: false,
    loading: false,
    seq: 0, // bumps on every new search; stale replies are dropped
    abort: null,
    current: -1, // the grid's keyboard position
    viewing: -1, // the result shown in the large view
    explain: null, // {id, q, data, word}
    status: null,
    filters: [], // [key, value] pairs of FILTER_KEYS, in the address's order
  };

  // Dropped images cannot go in the address: history entries point into this map instead.
  const droppedImages = new Map();
  let droppedKey = 0;

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(url, options = {}) {
    let res;
    try {
      res = await fetch(url, {
        credentials: "same-origin",
        ...options,
        headers: { Accept: "application/json", ...(options.headers || {}) },
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`Cannot reach the vtsearch server (${err.message}). Is it running?`, 0);
    }
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      let msg = body && (body.error ?? body.detail);
      if (msg && typeof msg !== "string") msg = JSON.stringify(msg);
      if (!msg) msg = `${res.status} ${res.statusText || "error"} from ${url}`;
      if (res.status === 401 || res.status === 403) {
        msg += "\nOpen the address that `vtsearch serve` printed (the one with ?token=) once.";
      }
      throw new ApiError(msg, res.status);
    }
    if (body === null && text) throw new ApiError(`Not JSON from ${url}: ${text.slice(0, 200)}`, 0);
    return body;
  }

  function showError(err) {
    if (err && err.name === "AbortError") return;
    el.messageText.textContent = err instanceof Error ? err.message : String(err);
    el.message.hidden = false;
    if (!(err instanceof ApiError)) console.error(err);
  }

  function clearError() {
    el.message.hidden = true;
    el.messageText.textContent = "";
  }

  el.messageClose.addEventListener("click", clearError);

  // ---------------------------------------------------------------- formatting

  const basename = (p) => String(p).split(/[\\/]/).pop();
  const fmtScore = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));

  function fmtBytes(n) {
    if (n === null || n === undefined) return null;
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${v.toFixed(i && v < 10 ? 1 : 0)} ${units[i]}`;
  }

  function fmtDate(s) {
    if (!s) return null;
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? String(s) : d.toLocaleString();
  }

  // A word's weight is its share of the fusion score (the shares sum to 1).
  function fmtWeight(w) {
    if (w === null || w === undefined || Number.isNaN(Number(w))) return "";
    return `${Math.round(Number(w) * 100)}%`;
  }

  function scoreLines(r) {
    const lines = [`score ${fmtScore(r.score)}`];
    if (r.bi_score !== null && r.bi_score !== undefined) lines.push(`bi-encoder ${fmtScore(r.bi_score)}`);
    if (r.rerank_score !== null && r.rerank_score !== undefined) {
      lines.push(`re-ranker ${fmtScore(r.rerank_score)}`);
    }
    if (r.prior !== null && r.prior !== undefined) lines.push(`prior ${fmtScore(r.prior)}`);
    return lines;
  }

  // ---------------------------------------------------------------- address <-> search

  function modeFromLocation() {
    const params = new URLSearchParams(location.search);
    const similar = params.get("similar");
    if (similar) return { kind: "similar", id: similar };
    if (params.get("view") === "dupes") return { kind: "dupes" };
    const q = (params.get("q") || "").trim();
    if (q) return { kind: "text", q };
    const key = history.state && history.state.image;
    if (key !== undefined && key !== null) {
      return droppedImages.get(key) || { kind: "image-gone" };
    }
    return null;
  }

  function filtersFromLocation() {
    const params = new URLSearchParams(location.search);
    return [...params].filter(([key]) => FILTER_KEYS.includes(key));
  }

  function urlFor(mode) {
    const params = new URLSearchParams();
    if (mode && mode.kind === "text") params.append("q", mode.q);
    if (mode && mode.kind === "similar") params.append("similar", mode.id);
    if (mode && mode.kind === "dupes") params.append("view", "dupes");
    for (const [key, value] of state.filters) params.append(key, value);
    const query = params.toString();
    return query ? `/?${query}` : "/";
  }

  function stateFor(mode) {
    return mode && mode.kind === "image" ? { image: mode.key } : {};
  }

  /** Start a search; `push` adds a history entry (a new search), else the current one is kept. */
  function navigate(mode, { push = true } = {}) {
    const url = urlFor(mode);
    const same = url === location.pathname + location.search && !(mode && mode.kind === "image");
    if (push && !same) history.pushState(stateFor(mode), "", url);
    else history.replaceState(stateFor(mode), "", url);
    run(mode);
  }

  window.addEventListener("popstate", () => {
    if (el.viewer.open) el.viewer.close();
    state.filters = filtersFromLocation();
    renderFilterBar();
    run(modeFromLocation());
  });

  // ---------------------------------------------------------------- searching

  function run(mode) {
    state.seq += 1;
    if (state.abort) state.abort.abort();
    state.abort = null;
    state.mode = mode;
    state.results = [];
    state.ids = new Set();
    state.hasMore = false;
    state.loading = false;
    state.current = -1;
    state.viewing = -1;
    state.explain = null;
    el.grid.replaceChildren();
    el.more.hidden = true;
    el.summary.classList.remove("empty");
    el.summary.replaceChildren();
    clearError();

    // The duplicates take the grid's place; the filters do not apply to them.
    const dupes = Boolean(mode && mode.kind === "dupes");
    el.grid.hidden = dupes;
    el.gridEnd.hidden = dupes;
    el.filters.hidden = dupes;
    el.dupeGroups.hidden = !dupes;
    el.dupeGroups.replaceChildren();
    if (dupes) el.dupes.setAttribute("aria-current", "page");
    else el.dupes.removeAttribute("aria-current");

    el.q.value = mode && mode.kind === "text" ? mode.q : "";
    document.title = mode && mode.kind === "text" ? `${mode.q} · vtsearch` : "vtsearch";
    if (dupes) document.title = "duplicates · vtsearch";
    if (!mode) {
      idleSummary();
      return;
    }
    if (mode.kind === "image-gone") {
      el.summary.textContent = "That search was by a dropped image, which a reload forgets: drop it again.";
      return;
    }
    if (dupes) {
      loadDupes();
      return;
    }
    el.summary.textContent = "Searching…";
    loadPage();
  }

  function idleSummary() {
    const s = state.status;
    if (s && s.indexed === 0) {
      el.summary.classList.add("empty");
      el.summary.textContent = s.can_index
        ? "Nothing is indexed yet: press re-index, or run `vtsearch index FOLDER`."
        : "Nothing is indexed yet: run `vtsearch index FOLDER`, then reload.";
    } else {
      el.summary.textContent = "Type what you are looking for, or drop a photo to find ones like it.";
    }
  }

  function requestPage(mode, offset, signal) {
    const page = { k: String(PAGE), offset: String(offset) };
    // The filters go in the query string, also of an upload.
    const withFilters = (params) => {
      const all = new URLSearchParams(params);
      for (const [key, value] of state.filters) all.append(key, value);
      return all;
    };
    if (mode.kind === "text") {
      return api(`/api/search?${withFilters({ q: mode.q, ...page })}`, { signal });
    }
    if (mode.kind === "similar") {
      const id = encodeURIComponent(mode.id);
      return api(`/api/similar/${id}?${withFilters(page)}`, { signal });
    }
    const form = new FormData();
    form.append("image", mode.file, mode.file.name || "image");
    form.append("k", page.k);
    form.append("offset", page.offset);
    const query = withFilters({}).toString();
    return api(`/api/search${query ? `?${query}` : ""}`, { method: "POST", body: form, signal });
  }

  async function loadPage() {
    if (!state.mode || state.loading) return;
    const seq = state.seq;
    const mode = state.mode;
    const controller = new AbortController();
    state.abort = controller;
    state.loading = true;
    el.more.disabled = true;
    try {
      const data = await requestPage(mode, state.results.length, controller.signal);
      if (seq !== state.seq) return;
      const fresh = (data.results || []).filter((r) => !state.ids.has(String(r.id)));
      appendTiles(fresh);
      state.hasMore = Boolean(data.has_more) && fresh.length > 0;
      renderSummary();
    } catch (err) {
      if (seq !== state.seq) return;
      if (state.results.length === 0) el.summary.textContent = "";
      showError(err);
      state.hasMore = false;
    } finally {
      if (seq === state.seq) {
        state.loading = false;
        state.abort = null;
        el.more.disabled = false;
        el.more.hidden = !state.hasMore;
      }
    }
    if (seq === state.seq) requestAnimationFrame(fillViewport);
  }

  function renderSummary() {
    const n = state.results.length;
    const mode = state.mode;
    el.summary.replaceChildren();
    el.summary.classList.toggle("empty", n === 0);
    const count = `${n}${state.hasMore ? "+" : ""} photo${n === 1 && !state.hasMore ? "" : "s"}`;
    const among = state.filters.length ? " among the filtered ones" : "";
    if (mode.kind === "text") {
      el.summary.textContent = n
        ? `${count} for “${mode.q}”${state.filters.length ? " (filtered)" : ""}`
        : `No photos${among} match “${mode.q}”.`;
    } else if (mode.kind === "similar") {
      const name = mode.name ? `“${mode.name}”` : `photo ${mode.id}`;
      el.summary.textContent = n
        ? `${count} like ${name}${state.filters.length ? " (filtered)" : ""}`
        : `No other photos${among} are like ${name}.`;
      if (!mode.name && !mode.asked) fillSimilarName(mode);
    } else {
      const thumb = document.createElement("img");
      thumb.className = "query-thumb";
      thumb.alt = "";
      thumb.src = mode.url;
      thumb.height = 28;
      el.summary.append(thumb, ` ${n ? `${count} like` : "No photos are like"} ${mode.file.name || "the image"}`);
    }
    if (n === 0 && state.status && state.status.indexed === 0) {
      el.summary.textContent += " (the collection is empty)";
    }
  }

  async function fillSimilarName(mode) {
    mode.asked = true;
    try {
      const info = await api(`/api/images/${encodeURIComponent(mode.id)}`);
      if (state.mode !== mode) return;
      mode.name = info.name || basename(info.path);
      renderSummary();
    } catch (err) {
      if (state.mode === mode) showError(err);
    }
  }

  function appendTiles(results) {
    const frag = document.createDocumentFragment();
    for (const r of results) {
      const i = state.results.length;
      state.results.push(r);
      state.ids.add(String(r.id));
      frag.append(makeTile(r, i));
    }
    el.grid.append(frag);
    if (state.current < 0 && state.results.length) setCurrent(0, false);
  }

  function makeTile(r, i) {
    const tile = document.createElement("button");
    tile.type = "button";
    tile.className = "tile";
    tile.tabIndex = -1;
    tile.dataset.index = String(i);
    tile.dataset.id = String(r.id);
    tile.dataset.testid = "tile";
    const name = basename(r.path);
    tile.title = [name, ...scoreLines(r)].join("\n");
    tile.setAttribute("aria-label", `${name}, score ${fmtScore(r.score)}`);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = name;
    img.src = r.thumb;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = fmtScore(r.score);
    tile.append(img, score);
    return tile;
  }

  // "more" button and infinite scroll: load while the end of the grid is near the screen.
  el.more.addEventListener("click", () => loadPage());

  function nearEnd() {
    return el.gridEnd.getBoundingClientRect().top < window.innerHeight + 800;
  }

  function fillViewport() {
    if (state.hasMore && !state.loading && nearEnd()) loadPage();
  }

  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) fillViewport();
    }, { rootMargin: "0px 0px 800px 0px" }).observe(el.gridEnd);
  }

  el.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = el.q.value.trim();
    navigate(q ? { kind: "text", q } : null);
  });

  // ---------------------------------------------------------------- duplicates

  el.dupes.addEventListener("click", () => {
    if (el.viewer.open) el.viewer.close();
    navigate({ kind: "dupes" });
  });

  async function loadDupes() {
    const seq = state.seq;
    const controller = new AbortController();
    state.abort = controller;
    el.summary.textContent = "Looking for copies…";
    try {
      const data = await api("/api/dupes", { signal: controller.signal });
      if (seq === state.seq) renderDupes(data);
    } catch (err) {
      if (seq !== state.seq) return;
      el.summary.textContent = "";
      showError(err);
    }
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function renderDupes(data) {
    const groups = data.groups || [];
    const how = `copies: similarity ${fmtScore(data.threshold)} or more, measured by ${data.measure}`;
    if (!groups.length) {
      el.summary.classList.add("empty");
      el.summary.textContent = `No duplicates: no two photos are copies of each other (${how}).`;
      return;
    }
    const spares = groups.flatMap((g) => g.files.slice(1));
    const spareBytes = spares.reduce((sum, f) => sum + (f.bytes || 0), 0);
    el.summary.textContent =
      `${plural(groups.length, "group")} of copies, ${plural(spares.length, "spare file")} ` +
      `(${fmtBytes(spareBytes)}); the first of each group is the one to keep (${how}).`;
    el.dupeGroups.append(...groups.map(dupeGroup));
  }

  function dupeGroup(group) {
    const section = document.createElement("section");
    section.className = "dupe-group";
    const title = document.createElement("h2");
    title.textContent = `${group.kind === "exact" ? "exact" : "near"} copies · ${group.files.length} files`;
    const list = document.createElement("ol");
    list.append(...group.files.map(dupeFile));
    section.append(title, list);
    return section;
  }

  // Each file joins state.results too, so the large view can show it and step through them all.
  function dupeFile(f) {
    const i = state.results.length;
    state.results.push(f);
    const name = basename(f.path);
    const copy = f.exact ? "exact copy" : "near copy";
    const mark = f.keep ? "keep" : copy;
    const similarity = f.keep ? "" : `similarity ${fmtScore(f.similarity)}`;

    const item = document.createElement("li");
    item.className = f.keep ? "dupe keep" : "dupe";
    const thumb = document.createElement("button");
    thumb.type = "button";
    thumb.className = "dupe-thumb";
    thumb.dataset.index = String(i);
    thumb.dataset.id = String(f.id);
    thumb.title = f.root ? `${f.root}/${f.path}` : f.path;
    thumb.setAttribute("aria-label", [name, mark, similarity].filter(Boolean).join(", "));
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = name;
    img.src = f.thumb;
    const badge = document.createElement("span");
    badge.className = "mark";
    badge.textContent = mark;
    thumb.append(img, badge);

    const caption = document.createElement("div");
    caption.className = "dupe-facts";
    const path = document.createElement("div");
    path.className = "dupe-path";
    path.textContent = f.path;
    const facts = [
      f.width && f.height ? `${f.width} × ${f.height}` : "size unknown",
      fmtBytes(f.bytes),
      f.format,
    ].filter(Boolean);
    caption.append(path, facts.join(" · "));
    if (similarity) caption.append(document.createElement("br"), similarity);
    item.append(thumb, caption);
    return item;
  }

  el.dupeGroups.addEventListener("click", (ev) => {
    const thumb = ev.target.closest(".dupe-thumb");
    if (thumb) openViewer(Number(thumb.dataset.index));
  });

  const showingDupes = () => Boolean(state.mode && state.mode.kind === "dupes");
  const dupeThumb = (i) => el.dupeGroups.querySelector(`.dupe-thumb[data-index="${i}"]`);

  // ---------------------------------------------------------------- search by image

  function searchByImage(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name || "That file"} is not an image (${file.type}).`);
      return;
    }
    droppedKey += 1;
    const mode = { kind: "image", file, key: droppedKey, url: URL.createObjectURL(file) };
    droppedImages.set(mode.key, mode);
    for (const key of droppedImages.keys()) {
      if (droppedImages.size <= 8) break;
      URL.revokeObjectURL(droppedImages.get(key).url);
      droppedImages.delete(key);
    }
    if (el.viewer.open) el.viewer.close();
    navigate(mode);
  }

  el.pick.addEventListener("change", () => {
    const file = el.pick.files && el.pick.files[0];
    el.pick.value = "";
    searchByImage(file);
  });

  const draggingSomething = (ev) =>
    ev.dataTransfer && [...ev.dataTransfer.types].some((t) => t === "Files" || t === "text/uri-list");

  window.addEventListener("dragenter", (ev) => {
    if (!draggingSomething(ev)) return;
    ev.preventDefault();
    el.drop.hidden = false;
  });
  window.addEventListener("dragover", (ev) => {
    if (!draggingSomething(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  el.drop.addEventListener("dragleave", (ev) => {
    if (ev.target === el.drop) el.drop.hidden = true;
  });
  window.addEventListener("drop", (ev) => {
    if (!draggingSomething(ev)) return;
    ev.preventDefault();
    el.drop.hidden = true;
    const dt = ev.dataTransfer;
    if (!dt) return;
    const file = [...dt.files].find((f) => !f.type || f.type.startsWith("image/"));
    if (file) {
      searchByImage(file);
      return;
    }
    // A thumbnail dragged from this page's own grid: photos like that one.
    const uri = (dt.getData("text/uri-list") || "").split("\n")[0].trim();
    let own = null;
    try {
      const m = new URL(uri, location.href);
      if (m.origin === location.origin) own = m.pathname.match(/^\/api\/images\/([^/]+)\//);
    } catch {
      own = null; // not a URL
    }
    if (own) {
      navigate({ kind: "similar", id: decodeURIComponent(own[1]) });
    } else if (dt.files.length) {
      showError(`${dt.files[0].name} is not an image.`);
    } else {
      showError("Drop an image file (from your computer) to search by it.");
    }
  });

  document.addEventListener("paste", (ev) => {
    const items = ev.clipboardData ? [...ev.clipboardData.items] : [];
    const item = items.find((it) => it.kind === "file" && it.type.startsWith("image/"));
    if (!item) return;
    ev.preventDefault();
    searchByImage(item.getAsFile());
  });

  // ---------------------------------------------------------------- keyboard in the grid

  const tileAt = (i) => el.grid.children[i] || null;

  function setCurrent(i, focus = true) {
    const old = tileAt(state.current);
    if (old) {
      old.classList.remove("current");
      old.tabIndex = -1;
    }
    state.current = i;
    const tile = tileAt(i);
    if (!tile) return;
    tile.classList.add("current");
    tile.tabIndex = 0;
    if (focus) {
      tile.focus({ preventScroll: true });
      tile.scrollIntoView({ block: "nearest" });
    }
  }

  function columns() {
    const tracks = getComputedStyle(el.grid).gridTemplateColumns.split(" ").filter(Boolean);
    return Math.max(1, tracks.length);
  }

  const typingIn = (t) =>
    t instanceof HTMLElement &&
    (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));

  async function moveBy(delta) {
    const n = state.results.length;
    let target = state.current + delta;
    if (target < 0) {
      if (delta <= -columns() && state.current < columns()) el.q.focus();
      else setCurrent(0);
      return;
    }
    if (target >= n && state.hasMore) {
      await loadPage();
      target = Math.min(target, state.results.length - 1);
    }
    setCurrent(Math.min(target, state.results.length - 1));
  }

  el.grid.addEventListener("click", (ev) => {
    const tile = ev.target.closest(".tile");
    if (tile) openViewer(Number(tile.dataset.index));
  });

  el.grid.addEventListener("focusin", (ev) => {
    const tile = ev.target.closest(".tile");
    if (tile && Number(tile.dataset.index) !== state.current) setCurrent(Number(tile.dataset.index), false);
  });

  document.addEventListener("keydown", (ev) => {
    if (el.viewer.open || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "/" && !typingIn(ev.target)) {
      ev.preventDefault();
      el.q.focus();
      el.q.select();
      return;
    }
    if (ev.target === el.q) {
      if (ev.key === "ArrowDown" && state.results.length) {
        ev.preventDefault();
        if (showingDupes()) dupeThumb(0).focus();
        else setCurrent(Math.max(state.current, 0));
      } else if (ev.key === "Escape") {
        el.q.blur();
      }
      return;
    }
    if (!(ev.target instanceof Element) || !ev.target.closest(".tile")) return;
    const moves = {
      ArrowRight: 1,
      ArrowLeft: -1,
      ArrowDown: columns(),
      ArrowUp: -columns(),
      PageDown: columns() * 4,
      PageUp: -columns() * 4,
    };
    if (ev.key in moves) {
      ev.preventDefault();
      moveBy(moves[ev.key]);
    } else if (ev.key === "Home") {
      ev.preventDefault();
      setCurrent(0);
    } else if (ev.key === "End") {
      ev.preventDefault();
      setCurrent(state.results.length - 1);
    }
  });

  // ---------------------------------------------------------------- the large view

  function metaRow(label, value, title) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value;
    if (title) dd.title = title;
    el.meta.append(dt, dd);
  }

  function renderMeta(r, info) {
    const d = { ...r, ...(info || {}) };
    el.name.textContent = d.name || basename(d.path);
    el.meta.replaceChildren();
    metaRow("path", d.path);
    metaRow("folder", d.root);
    metaRow("size", d.width && d.height ? `${d.width} × ${d.height}` : null);
    metaRow("taken", fmtDate(d.taken_at) || "unknown", d.taken_at || undefined);
    metaRow("format", info ? d.format || "unknown" : "…");
    metaRow("file size", info ? fmtBytes(d.bytes) : "…");
    if (r.score !== null && r.score !== undefined) metaRow("score", fmtScore(r.score));
    if (r.bi_score !== null && r.bi_score !== undefined) metaRow("bi-encoder", fmtScore(r.bi_score));
    if (r.rerank_score !== null && r.rerank_score !== undefined) {
      metaRow("re-ranker", fmtScore(r.rerank_score));
    }
    if (r.prior !== null && r.prior !== undefined) metaRow("prior", fmtScore(r.prior));
    metaRow("id", String(d.id));
    if (info && info.tags && info.tags.length) metaRow("tags", tagButtons(info.tags));
  }

  function tagButtons(tags) {
    const list = document.createElement("span");
    list.className = "tags";
    for (const tag of tags) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "tag";
      b.dataset.tag = tag;
      b.textContent = tag;
      b.title = `Only photos tagged “${tag}”`;
      list.append(b);
    }
    return list;
  }

  el.meta.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-tag]");
    if (!b) return;
    el.viewer.close();
    filterByTag(b.dataset.tag);
  });

  async function openViewer(i) {
    const r = state.results[i];
    if (!r) return;
    const keepWhy = el.viewer.open && el.why.getAttribute("aria-pressed") === "true";
    state.viewing = i;
    setCurrent(i, false);
    hideExplain();
    el.img.src = r.file;
    // Phones size the stage to the photo's shape (style.css, --aspect).
    if (r.width && r.height) el.stage.style.setProperty("--aspect", String(r.width / r.height));
    el.img.alt = basename(r.path);
    el.openFile.href = r.file;
    el.position.textContent = `${i + 1} / ${state.results.length}${state.hasMore ? "+" : ""}`;
    el.prev.disabled = i === 0;
    el.next.disabled = i >= state.results.length - 1 && !state.hasMore;
    el.why.hidden = !(state.mode && state.mode.kind === "text");
    el.why.setAttribute("aria-pressed", "false");
    renderMeta(r, null);
    if (keepWhy) explainCurrent();
    if (!el.viewer.open) {
      el.viewer.showModal();
      el.viewerBody.focus(); // not the first button, so Enter does not page on
    }
    const neighbour = state.results[i + 1];
    if (neighbour) new Image().src = neighbour.file;
    try {
      const info = await api(`/api/images/${encodeURIComponent(r.id)}`);
      if (state.viewing === i && el.viewer.open) renderMeta(r, info);
    } catch (err) {
      if (state.viewing !== i) return;
      showError(err);
      whyMessage(err.message, true); // the message area is under the modal view
    }
  }

  // A format the browser cannot show (HEIC, TIFF): the server's JPEG thumbnail instead.
  el.img.addEventListener("error", () => {
    const r = state.results[state.viewing];
    if (!r || !el.viewer.open || el.img.getAttribute("src") !== r.file) return;
    el.img.src = r.thumb;
    whyMessage("This browser cannot show the original file; this is its thumbnail.");
  });

  async function step(delta) {
    const i = state.viewing + delta;
    if (i < 0) return;
    if (i >= state.results.length) {
      if (!state.hasMore) return;
      await loadPage();
      if (i >= state.results.length) return;
    }
    openViewer(i);
  }

  el.prev.addEventListener("click", () => step(-1));
  el.next.addEventListener("click", () => step(1));
  el.close.addEventListener("click", () => el.viewer.close());

  el.viewer.addEventListener("keydown", (ev) => {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowLeft") {
      ev.preventDefault();
      step(-1);
    } else if (ev.key === "ArrowRight") {
      ev.preventDefault();
      step(1);
    }
  });

  el.viewer.addEventListener("close", () => {
    hideExplain();
    el.img.removeAttribute("src");
    if (state.viewing >= 0 && showingDupes()) dupeThumb(state.viewing)?.focus();
    else if (state.viewing >= 0) setCurrent(state.viewing);
    state.viewing = -1;
  });

  el.similar.addEventListener("click", () => {
    const r = state.results[state.viewing];
    if (!r) return;
    el.viewer.close();
    navigate({ kind: "similar", id: String(r.id), name: basename(r.path) });
  });

  // ---------------------------------------------------------------- why: attention heatmaps

  function hideExplain() {
    state.explain = null;
    el.heatmap.hidden = true;
    el.words.hidden = true;
    el.words.replaceChildren();
    el.whyMessage.hidden = true;
    el.whyMessage.classList.remove("error");
    el.why.setAttribute("aria-pressed", "false");
  }

  function whyMessage(text, isError) {
    el.whyMessage.textContent = text;
    el.whyMessage.classList.toggle("error", Boolean(isError));
    el.whyMessage.hidden = false;
  }

  el.why.addEventListener("click", () => {
    if (el.why.getAttribute("aria-pressed") === "true") hideExplain();
    else explainCurrent();
  });

  async function explainCurrent() {
    const r = state.results[state.viewing];
    if (!r || !state.mode || state.mode.kind !== "text") return;
    const q = state.mode.q;
    const viewing = state.viewing;
    hideExplain();
    el.why.setAttribute("aria-pressed", "true");
    el.why.disabled = true;
    whyMessage("Looking at where the words land…");
    try {
      const data = await api(`/api/explain?${new URLSearchParams({ q, id: String(r.id) })}`);
      if (state.viewing !== viewing) return;
      el.whyMessage.hidden = true;
      if (data.term && data.term.trim() !== q.trim()) {
        whyMessage(`Explaining the term “${data.term}”, the one re-ranking scores.`);
      }
      state.explain = { id: r.id, data, word: null };
      renderWords(data);
      await drawExplain();
    } catch (err) {
      if (state.viewing !== viewing) return;
      el.why.setAttribute("aria-pressed", "false");
      if (err.name === "AbortError") return;
      // 404: this collection has no fusion scorer; its message says why.
      whyMessage(err.message, err.status !== 404);
    } finally {
      el.why.disabled = false;
    }
  }

  function renderWords(data) {
    el.words.replaceChildren();
    const add = (label, word, extra, title) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.word = word;
      b.setAttribute("aria-pressed", "false");
      b.textContent = label;
      if (extra) {
        const w = document.createElement("span");
        w.className = "weight";
        w.textContent = extra;
        b.append(w);
      }
      if (title) b.title = title;
      el.words.append(b);
    };
    add("whole query", "", "", "Attention of the whole query");
    for (const w of data.words || []) {
      const parts = [`${fmtWeight(w.weight)} of the score`];
      if (typeof w.match === "number") parts.push(`match ${fmtScore(w.match)}`);
      add(w.word, w.word, fmtWeight(w.weight), parts.join(", "));
    }
    el.words.hidden = false;
    markWord(null);
  }

  function markWord(word) {
    for (const b of el.words.querySelectorAll("button")) {
      b.setAttribute("aria-pressed", String((b.dataset.word || null) === word));
    }
  }

  el.words.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b || !state.explain) return;
    state.explain.word = b.dataset.word || null;
    markWord(state.explain.word);
    drawExplain();
  });

  async function drawExplain() {
    const ex = state.explain;
    if (!ex) return;
    if (!el.img.complete || !el.img.naturalWidth) {
      try {
        await el.img.decode();
      } catch {
        return;
      }
    }
    if (state.explain !== ex) return;
    let grid = ex.data.attention;
    if (ex.word !== null) {
      const w = (ex.data.words || []).find((x) => x.word === ex.word);
      if (w) grid = w.attention;
    }
    drawHeatmap(grid, ex.data.area);
    el.heatmap.dataset.word = ex.word === null ? "" : ex.word; // what is drawn, for tests
  }

  // A blue -> cyan -> yellow -> red ramp.
  const RAMP = [
    [0.0, [40, 60, 220]],
    [0.35, [0, 220, 255]],
    [0.65, [255, 230, 0]],
    [1.0, [255, 30, 0]],
  ];

  function ramp(v) {
    for (let k = 1; k < RAMP.length; k += 1) {
      const [t1, c1] = RAMP[k];
      const [t0, c0] = RAMP[k - 1];
      if (v <= t1) {
        const f = (v - t0) / (t1 - t0);
        return c0.map((c, j) => Math.round(c + (c1[j] - c) * f));
      }
    }
    return RAMP[RAMP.length - 1][1];
  }

  /** Draw a rows x cols attention map over the photo, bilinearly upsampled, semi-transparent.
   *  The model saw the photo's centre square (resize + centre crop), so that is where the map
   *  goes, unless the API names the area it saw (area: [left, top, right, bottom], fractions). */
  function drawHeatmap(grid, area) {
    if (!Array.isArray(grid) || !grid.length || !Array.isArray(grid[0])) return;
    const rows = grid.length;
    const cols = grid[0].length;
    const flat = grid.flat().map(Number);
    const lo = Math.min(...flat);
    const hi = Math.max(...flat);
    const span = hi - lo > 1e-12 ? hi - lo : 1;

    const N = 112;
    const small = document.createElement("canvas");
    small.width = N;
    small.height = N;
    const sctx = small.getContext("2d");
    const px = sctx.createImageData(N, N);
    const at = (r, c) => (grid[r][c] - lo) / span;
    for (let y = 0; y < N; y += 1) {
      const gy = Math.min(Math.max(((y + 0.5) / N) * rows - 0.5, 0), rows - 1);
      const r0 = Math.floor(gy);
      const r1 = Math.min(r0 + 1, rows - 1);
      const fy = gy - r0;
      for (let x = 0; x < N; x += 1) {
        const gx = Math.min(Math.max(((x + 0.5) / N) * cols - 0.5, 0), cols - 1);
        const c0 = Math.floor(gx);
        const c1 = Math.min(c0 + 1, cols - 1);
        const fx = gx - c0;
        const v =
          at(r0, c0) * (1 - fx) * (1 - fy) +
          at(r0, c1) * fx * (1 - fy) +
          at(r1, c0) * (1 - fx) * fy +
          at(r1, c1) * fx * fy;
        const [red, green, blue] = ramp(v);
        const o = (y * N + x) * 4;
        px.data[o] = red;
        px.data[o + 1] = green;
        px.data[o + 2] = blue;
        px.data[o + 3] = Math.round(255 * (0.06 + 0.56 * v)); // cool parts barely tinted
      }
    }
    sctx.putImageData(px, 0, 0);

    // The photo's box on screen: the <img> element, letterboxed by object-fit: contain.
    const w = el.img.clientWidth;
    const h = el.img.clientHeight;
    const scale = Math.min(w / el.img.naturalWidth, h / el.img.naturalHeight);
    const pw = el.img.naturalWidth * scale;
    const ph = el.img.naturalHeight * scale;
    const dpr = window.devicePixelRatio || 1;
    const canvas = el.heatmap;
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    let [x0, y0, x1, y1] = [0, 0, 1, 1];
    if (Array.isArray(area) && area.length === 4) {
      [x0, y0, x1, y1] = area.map(Number);
    } else {
      const side = Math.min(pw, ph);
      x0 = (pw - side) / 2 / pw;
      x1 = 1 - x0;
      y0 = (ph - side) / 2 / ph;
      y1 = 1 - y0;
    }
    const left = (w - pw) / 2 + x0 * pw;
    const top = (h - ph) / 2 + y0 * ph;
    ctx.drawImage(small, left * dpr, top * dpr, (x1 - x0) * pw * dpr, (y1 - y0) * ph * dpr);
    canvas.hidden = false;
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.explain && !el.heatmap.hidden) drawExplain();
    }, 100);
  });

  // ---------------------------------------------------------------- the filter bar

  const filterValue = (key) => {
    const pair = state.filters.find(([k]) => k === key);
    return pair ? pair[1] : "";
  };

  /** Set one filter (an empty value removes it) and search again, as a new history entry. */
  function setFilter(key, value) {
    const rest = state.filters.filter(([k]) => k !== key);
    state.filters = value ? [...rest, [key, value]] : rest;
    applyFilters();
  }

  const searching = () => Boolean(state.mode && ["text", "similar", "image"].includes(state.mode.kind));

  function applyFilters() {
    renderFilterBar();
    if (searching()) navigate(state.mode);
    else history.replaceState(history.state, "", urlFor(state.mode));
  }

  /** Narrow the search to one tag (the picker holds one; more come only from the address).
   *  With no search to narrow (the start, the duplicates), the tag's name is the search. */
  function filterByTag(tag) {
    if (!tag || searching()) {
      setFilter("tag", tag);
      return;
    }
    state.filters = [...state.filters.filter(([k]) => k !== "tag"), ["tag", tag]];
    renderFilterBar();
    navigate({ kind: "text", q: tag });
  }

  // A date as the API reads it (YYYY, YYYY-MM, YYYY-MM-DD...) -> the day a date input shows.
  function dayOf(s) {
    const m = String(s || "").match(/^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?/);
    return m ? `${m[1]}-${m[2] || "01"}-${m[3] || "01"}` : "";
  }

  function addDays(day, n) {
    const d = new Date(`${day}T00:00:00Z`);
    if (Number.isNaN(d.getTime())) return "";
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  const rootsOf = () => [...el.fRoot.options].map((o) => o.value).filter(Boolean);

  /** The bar shows the filters of the address: "to" is the day before `before` (which the API
   *  takes as exclusive), `in` a root and the part of the path below it. */
  function renderFilterBar() {
    el.fAfter.value = dayOf(filterValue("after"));
    const before = dayOf(filterValue("before"));
    el.fUntil.value = before ? addDays(before, -1) : "";
    const where = filterValue("in");
    const root = rootsOf()
      .filter((r) => where === r || where.startsWith(r.endsWith("/") ? r : `${r}/`))
      .sort((a, b) => b.length - a.length)[0];
    el.fRoot.value = root || "";
    el.fSub.value = root ? where.slice(root.length).replace(/^\/+/, "") : where;
    el.fOrientation.value = filterValue("orientation");
    // A tag the list lacks (a bookmark from before a re-tag) still shows, so it can be cleared.
    const tag = filterValue("tag");
    if (tag && ![...el.fTag.options].some((o) => o.value === tag)) el.fTag.append(new Option(tag, tag));
    el.fTag.value = tag;
    el.fTagLabel.hidden = el.fTag.options.length < 2;
    for (const input of [el.fAfter, el.fUntil, el.fRoot, el.fSub, el.fOrientation, el.fTag]) {
      input.classList.toggle("set", Boolean(input.value));
    }
    el.fClear.hidden = state.filters.length === 0;
  }

  function fillRoots(roots) {
    const have = rootsOf().join("\n");
    if (have === roots.map((r) => r.path).join("\n")) return;
    el.fRoot.replaceChildren(new Option("all folders", ""));
    for (const r of roots) el.fRoot.append(new Option(basename(r.path) || r.path, r.path));
    for (const o of el.fRoot.options) if (o.value) o.title = o.value;
    renderFilterBar();
  }

  function fillTags(tags) {
    el.fTag.replaceChildren(new Option("any tag", ""));
    for (const t of tags) el.fTag.append(new Option(`${t.tag} (${t.images})`, t.tag));
    renderFilterBar();
  }

  async function loadTags() {
    try {
      const data = await api("/api/tags");
      fillTags(data.tags || []);
    } catch (err) {
      if (err.status !== 404) showError(err); // 404: nothing indexed yet, so no tags either
    }
  }

  el.fAfter.addEventListener("change", () => setFilter("after", el.fAfter.value));
  el.fUntil.addEventListener("change", () =>
    setFilter("before", el.fUntil.value ? addDays(el.fUntil.value, 1) : ""),
  );
  el.fOrientation.addEventListener("change", () => setFilter("orientation", el.fOrientation.value));
  el.fTag.addEventListener("change", () => filterByTag(el.fTag.value));

  // The folder: the chosen root, and below it what the text box says (a path of its own when
  // it starts with "/"; relative with "all folders": that folder inside any indexed one).
  function folderFilter() {
    const sub = el.fSub.value.trim().replace(/\/+$/, "");
    const root = el.fRoot.value;
    if (sub.startsWith("/") || !root) return sub;
    return sub ? `${root.replace(/\/+$/, "")}/${sub}` : root;
  }
  el.fRoot.addEventListener("change", () => setFilter("in", folderFilter()));
  el.fSub.addEventListener("change", () => setFilter("in", folderFilter()));
  el.fSub.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      el.fSub.blur(); // fires "change"
    }
  });

  el.fClear.addEventListener("click", () => {
    state.filters = [];
    applyFilters();
  });

  // ---------------------------------------------------------------- status and re-indexing

  async function loadStatus() {
    try {
      const s = await api("/api/status");
      state.status = s;
      const parts = [`${Number(s.indexed).toLocaleString()} photos`, s.model_id];
      if (s.failed) parts.push(`${s.failed} failed`);
      if (s.texts) parts.push(`${Number(s.texts).toLocaleString()} texts`);
      const missing = (s.roots || []).filter((r) => !r.exists).length;
      if (missing) parts.push(`${missing} folder${missing > 1 ? "s" : ""} missing`);
      if (s.readonly) parts.push("read-only");
      el.status.textContent = parts.join(" · ");
      el.status.title = [
        `collection ${s.path}`,
        `index ${s.index_kind}`,
        `re-ranker ${s.fusion ? "on" : "off"}`,
        ...(s.roots || []).map((r) => `${r.path}: ${r.images} images${r.exists ? "" : " (missing)"}`),
      ].join("\n");
      el.reindex.hidden = !s.can_index;
      el.dupes.hidden = s.indexed === 0; // nothing to compare
      fillRoots(s.roots || []);
      if (!state.mode) idleSummary();
      return s;
    } catch (err) {
      el.status.textContent = "status unavailable";
      showError(err);
      return null;
    }
  }

  // "scanned 19, embedded 2, unchanged 17 (1.2 s)": the report's non-zero counts.
  function summariseReport(report) {
    if (!report) return "";
    if (typeof report === "string") return report;
    const counts = [];
    for (const [key, v] of Object.entries(report)) {
      const n = Array.isArray(v) ? v.length : v;
      if (Number.isInteger(n) && (n > 0 || key === "embedded")) counts.push(`${key} ${n}`);
    }
    const secs = Number(report.seconds);
    return counts.join(", ") + (Number.isFinite(secs) ? ` (${secs.toFixed(1)} s)` : "");
  }

  let polling = false;

  async function pollIndex() {
    if (polling) return;
    polling = true;
    el.reindex.disabled = true;
    el.progress.hidden = false;
    try {
      for (;;) {
        const job = await api("/api/index");
        if (job.state === "running") {
          if (job.total) {
            el.progress.max = job.total;
            el.progress.value = job.done || 0;
          } else {
            el.progress.removeAttribute("value");
          }
          el.indexText.textContent = `${job.phase || "indexing"} ${job.folder || ""} ${job.done || 0}${
            job.total ? ` / ${job.total}` : ""
          }`;
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        if (job.state === "failed") {
          el.indexText.textContent = "re-index failed";
          showError(job.error || "Re-indexing failed.");
        } else if (job.state === "done") {
          const summary = summariseReport(job.report);
          el.indexText.textContent = `re-indexed${summary ? `: ${summary}` : ""}`;
          await Promise.all([loadStatus(), loadTags()]);
          if (state.mode && state.mode.kind !== "image-gone") run(state.mode);
        } else {
          el.indexText.textContent = "";
        }
        break;
      }
    } catch (err) {
      el.indexText.textContent = "";
      showError(err);
    } finally {
      polling = false;
      el.progress.hidden = true;
      el.reindex.disabled = false;
    }
  }

  el.reindex.addEventListener("click", async () => {
    el.reindex.disabled = true;
    try {
      await api("/api/index", { method: "POST" });
    } catch (err) {
      // 409: one is running already, so follow it.
      if (err.status !== 409) {
        el.reindex.disabled = false;
        showError(err);
        return;
      }
    }
    pollIndex();
  });

  // ---------------------------------------------------------------- start

  async function start() {
    // A ?token= link has set its cookie by now; keep the token out of bookmarks and history.
    const params = new URLSearchParams(location.search);
    if (params.has("token")) {
      params.delete("token");
      const rest = params.toString();
      history.replaceState(history.state, "", rest ? `/?${rest}` : "/");
    }
    const mode = modeFromLocation();
    state.filters = filtersFromLocation();
    renderFilterBar();
    run(mode);
    loadTags();
    const status = await loadStatus();
    if (status && status.can_index) {
      try {
        const job = await api("/api/index");
        if (job && job.state === "running") pollIndex();
      } catch (err) {
        showError(err);
      }
    }
  }

  start();
})();

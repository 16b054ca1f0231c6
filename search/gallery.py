"""Indexed images by id, as a viewer asks for them: metadata, the file, a thumbnail.

Files are found by catalog id only, never by a path someone sends, and a file is handed out only
when it is a regular file inside the indexed folder its row belongs to once symbolic links are
resolved: a photo replaced by a link to ``/etc/passwd`` is refused, not served.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vtsearch.errors import ImageNotFoundError
from vtsearch.search.results import ImageInfo
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.records import is_under, root_of
from vtsearch.storage.schema import ImageRow
from vtsearch.storage.thumbs import ThumbCache


def indexed_row(catalog: Catalog, image_id: int) -> ImageRow:
    """The indexed row of ``image_id``.

    Raises:
        ImageNotFoundError: no indexed image has that id.
    """
    row = catalog.rows([image_id]).get(image_id)
    if row is None or row.status != "indexed":
        raise ImageNotFoundError(f"no indexed image has id {image_id}")
    return row


def image_info(catalog: Catalog, image_id: int) -> ImageInfo:
    """Metadata of an indexed image (raises :class:`ImageNotFoundError`)."""
    row = indexed_row(catalog, image_id)
    return ImageInfo(
        row.id,
        row.path,
        root_of(row.path, catalog.roots()),
        row.width,
        row.height,
        row.taken_at,
        row.format,
        row.size,
        list(dict.fromkeys(t.label for t in catalog.tags_of([row.id]).get(row.id, []))),
    )


def safe_file(catalog: Catalog, row: ImageRow) -> Path:
    """The file of ``row`` with every symbolic link resolved, when that is a regular file inside
    the row's indexed folder (itself resolved).

    Raises:
        ImageNotFoundError: the file is gone, is not a regular file, lies outside the folder (a
            link pointing out of it), or the row belongs to no indexed folder.
    """
    root = root_of(row.path, catalog.roots())
    if root is None:
        raise ImageNotFoundError(f"image {row.id} is in no indexed folder; it is not served")
    real, real_root = os.path.realpath(row.path), os.path.realpath(root)
    if not is_under(real, real_root):
        raise ImageNotFoundError(
            f"image {row.id} resolves outside its indexed folder (a symbolic link?); not served"
        )
    try:
        st = os.stat(real)
    except OSError as e:
        raise ImageNotFoundError(f"the file of image {row.id} cannot be read: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise ImageNotFoundError(f"the file of image {row.id} is not a regular file")
    return Path(real)


class Gallery:
    """The indexed images of one collection folder, by id: metadata, files and thumbnails.

    Example:
        >>> g = Gallery(Path("/tmp/coll"), Catalog.open(Path("/tmp/coll")))  # doctest: +SKIP
        >>> g.info(1).path, g.file(1), len(g.thumbnail(1))  # doctest: +SKIP
    """

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self.folder, self.catalog = folder, catalog
        self.thumbs = ThumbCache(folder)

    def info(self, image_id: int) -> ImageInfo:
        """Metadata of an indexed image (raises :class:`ImageNotFoundError`)."""
        return image_info(self.catalog, image_id)

    def file(self, image_id: int) -> Path:
        """The file of an indexed image, safe to hand out (see :func:`safe_file`)."""
        return safe_file(self.catalog, indexed_row(self.catalog, image_id))

    def thumbnail(self, image_id: int) -> bytes:
        """A JPEG thumbnail of an indexed image (longest side ``THUMB_SIZE``), made on first
        request and kept in the collection's ``thumbs/`` (made in memory only when the collection
        is read-only). The thumbnail of an id that no longer names an image is removed.

        Raises:
            ImageNotFoundError: no indexed image has that id, or its file may not be served or
                cannot be read.
        """
        from vtsearch.images import describe_error
        from vtsearch.images import thumbnail as make_thumbnail

        try:
            row = indexed_row(self.catalog, image_id)
        except ImageNotFoundError:
            if not self.catalog.readonly:
                self.thumbs.remove([image_id])
            raise
        got = self.thumbs.get(image_id, row.sha256)
        if got is not None:
            return got
        path = safe_file(self.catalog, row)
        try:
            data = make_thumbnail(str(path))
        except Exception as e:
            raise ImageNotFoundError(
                f"cannot make a thumbnail of image {image_id}: {describe_error(e, str(path))}"
            ) from e
        if not self.catalog.readonly:
            self.thumbs.put(image_id, row.sha256, data)
        return data

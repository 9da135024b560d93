"""WsgiDAV's filesystem provider, confined to one site's home and writing atomically.

Blocking: everything here is filesystem work and runs on the DAV thread pool.

* Every DAV path is checked like a site path (:func:`apiserver.sites.home.split_site_path`:
  no ``..``, NUL, backslash or percent-encoded tricks) and its folder must resolve inside the
  home (links in folders are followed only while they stay inside).  A symbolic link as the
  last part is never served, listed, written through or used as a COPY/MOVE destination
  (403): the link could lead anywhere, and DELETE would act on its target.
* GET opens the file and checks, on the open descriptor, that it is inside the home, so a link
  swapped in after the check is caught.
* PUT writes a temporary file created in the target's own folder (so it inherits the folder's
  default ACL, as Fortification sets them), gives it the replaced file's mode and access ACL,
  and renames it over the target when the body is complete: an interrupted or refused PUT
  leaves the old file (or, for a new one, nothing).
* New files and folders are owned by the thread's file-system user, which
  :mod:`apiserver.dav.wsgi` sets to the sites' owner when the server runs as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from typing import Optional

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST, HTTP_CONFLICT, HTTP_FORBIDDEN, HTTP_PRECONDITION_FAILED, DAVError,
)
from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource

from apiserver.dav import descriptors, propfind
from apiserver.errors import InvalidArgument
from apiserver.sites.home import is_inside, split_site_path

#: Prefix of the temporary files of PUTs in progress (never listed).
TEMP_PREFIX = ".dav-upload-"
#: The extended attribute holding a file's access ACL (copied to its replacement).
ACL_XATTR = "system.posix_acl_access"
#: Longest file name and path (Linux's NAME_MAX and PATH_MAX).
NAME_MAX, PATH_MAX = 255, 4096
#: Bytes read or written per step of GET, PUT and COPY (also WsgiDAV's ``block_size``).
BLOCK_SIZE = 256 * 1024


def _forbidden(reason: str) -> DAVError:
    return DAVError(HTTP_FORBIDDEN, reason)


def fd_path(fd: int) -> str:
    """The path the kernel has for open descriptor ``fd`` (what it really opened)."""
    return os.readlink(f"/proc/self/fd/{fd}")


class AtomicWriter:
    """A file object for PUT: writes ``<folder>/.dav-upload-*`` and renames it over the target on
    :meth:`commit`; :meth:`abort` removes it."""

    def __init__(self, folder_fd: int, name: str, temp_name: str, fd: int):
        self.folder_fd, self.name, self.temp_name = folder_fd, name, temp_name
        self.file = os.fdopen(fd, "wb", BLOCK_SIZE)
        self.done = False

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        """Flush the data (WsgiDAV closes before ``end_write``); the rename waits for :meth:`commit`."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def commit(self) -> None:
        self.close()
        os.rename(self.temp_name, self.name, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
        self.done = True
        os.close(self.folder_fd)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp_name, dir_fd=self.folder_fd)
        except FileNotFoundError:
            pass
        os.close(self.folder_fd)


class HomeFileResource(FileResource):
    """A file of the home; ``pending`` while a PUT creates it (nothing is on disk yet)."""

    def __init__(self, path: str, environ: dict, file_path: str, pending: bool = False,
                 info: Optional[os.stat_result] = None):
        if pending or info is not None:  # DAVNonCollection's constructor, without FileResource's stat
            super(FileResource, self).__init__(path, environ)
            self._file_path = file_path
            self.file_stat = info or os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
            self.name = util.to_str(os.path.basename(file_path))
        else:
            super().__init__(path, environ, file_path)
        self._writer = None
        self._content_type = None

    def get_content_type(self):
        """WsgiDAV's guess from the name, made once (a PROPFIND asks three times per member)."""
        if self._content_type is None:
            self._content_type = super().get_content_type()
        return self._content_type

    def get_ref_url(self):
        return _ref_url(self, FileResource)

    def get_etag(self):
        """WsgiDAV's ETag (inode, mtime, size) from the stat the resource was made with: no stat again."""
        info = self.file_stat
        return f"{info[stat.ST_INO]}-{info[stat.ST_MTIME]}-{info[stat.ST_SIZE]}"

    def get_content(self):
        """Open for reading and check on the descriptor that the file is inside the home."""
        # O_NONBLOCK: a FIFO swapped in after the check is opened without waiting for a writer.
        fd = os.open(self._file_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not is_inside(fd_path(fd), self.provider.root_folder_path_real) or not stat.S_ISREG(info.st_mode):
                raise _forbidden("the file is not inside the site's home")
            if info.st_nlink > 1:
                raise _forbidden("a file with other hard links (perhaps outside the site's home) is not served")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", BLOCK_SIZE)
        except BaseException:
            os.close(fd)
            raise

    def begin_write(self, *, content_type=None):
        """A temporary file in the target's folder, checked on the folder's descriptor."""
        folder, name = os.path.split(self._file_path)
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not is_inside(fd_path(folder_fd), self.provider.root_folder_path_real):
                raise _forbidden("the folder is not inside the site's home")
            temp_name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            # 0666 and the umask, or the folder's default ACL: as any file created in place.
            fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o666, dir_fd=folder_fd)
            try:
                _keep_permissions(folder_fd, name, fd)
            except BaseException:
                os.close(fd)
                os.unlink(temp_name, dir_fd=folder_fd)
                raise
        except BaseException:
            os.close(folder_fd)
            raise
        self._writer = AtomicWriter(folder_fd, name, temp_name, fd)
        return self._writer

    def end_write(self, *, with_errors):
        """Rename the complete upload over the target, or drop it."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if with_errors:
            writer.abort()
            return
        try:
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        self.file_stat = os.stat(self._file_path)

    def copy_move_single(self, dest_path, *, is_move):
        """COPY of one file (and MOVE across file systems): through a temporary file and a rename,
        like PUT.  A refusal of the file system is a DAV answer here (WsgiDAV's COPY and MOVE
        would answer any other exception 500)."""
        dest_file = self.provider._loc_to_file_path(dest_path, self.environ)
        target = HomeFileResource(dest_path, self.environ, dest_file, pending=True)
        with _as_dav_errors(), self.get_content() as source:
            copied = os.fstat(source.fileno())  # the file opened (and checked), not whatever the path is now
            writer = target.begin_write()
            try:
                shutil.copyfileobj(source, writer, BLOCK_SIZE)
            except BaseException:
                target.end_write(with_errors=True)
                raise
            target.end_write(with_errors=False)
        try:  # never through a link swapped in for the copy since
            os.utime(dest_file, ns=(copied.st_atime_ns, copied.st_mtime_ns), follow_symlinks=False)
        except OSError:
            pass
        prop_manager = self.provider.prop_manager
        if prop_manager:
            dest_url = self.provider.share_path + dest_path
            if is_move:
                prop_manager.move_properties(self.get_ref_url(), dest_url, with_children=False, environ=self.environ)
            else:
                prop_manager.copy_properties(self.get_ref_url(), dest_url, self.environ)


    def delete(self):
        """DELETE through the checked folder's descriptor (``unlinkat``)."""
        with _as_dav_errors():
            descriptors.remove_file(self._file_path, self.provider.root_folder_path_real)
        self.environ.setdefault(REMOVED, set()).add(self.path)
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def support_recursive_move(self, dest_path):
        return _can_rename(self, dest_path)

    def move_recursive(self, dest_path):
        _move(self, dest_path)


def _can_rename(res, dest_path) -> bool:
    """MOVE by one rename when the target's folder is on the same file system (else copy and delete)."""
    return descriptors.same_device(res._file_path, res.provider._loc_to_file_path(dest_path, res.environ))


def _move(res, dest_path) -> None:
    """MOVE by ``renameat2(RENAME_NOREPLACE)`` between the checked folders' descriptors; dead
    properties follow."""
    provider = res.provider
    dest_file = provider._loc_to_file_path(dest_path, res.environ)
    if util.is_equal_or_child_uri(res.path, dest_path):
        raise _forbidden("a resource cannot be moved into itself")
    with _as_dav_errors():
        descriptors.move(res._file_path, dest_file, provider.root_folder_path_real)
    if provider.prop_manager:
        provider.prop_manager.move_properties(res.get_ref_url(), provider.share_path + dest_path,
                                              with_children=True, environ=res.environ)


@contextlib.contextmanager
def _as_dav_errors():
    """Filesystem refusals as DAV answers: 403 out of the home or not allowed, 412 when the
    target exists, 409 when its folder is missing."""
    try:
        yield
    except descriptors.OutsideHome:
        raise _forbidden("the path leads out of the site's home") from None
    except FileExistsError:
        raise DAVError(HTTP_PRECONDITION_FAILED, "the target exists") from None
    except (FileNotFoundError, NotADirectoryError):
        raise DAVError(HTTP_CONFLICT, "a folder on the way is missing") from None
    except (PermissionError, IsADirectoryError):
        raise _forbidden("not allowed here") from None


def _ref_url(res, base) -> str:
    """The resource's quoted URL, made once (a PROPFIND asks for it ten times per member)."""
    ref = res.__dict__.get("_ref")
    if ref is None:
        ref = res._ref = base.get_ref_url(res)
    return ref


#: environ key: the DAV paths this DELETE removed (for :meth:`HomeProvider.exists`, WsgiDAV's
#: check after each one).
REMOVED = "apiserver.dav.removed"
#: environ key: the empty file a LOCK of an unmapped URL made (path, st_dev, st_ino).
LOCK_MADE_FILE = "apiserver.dav.lock_made_file"


def _remove_lock_file(environ: dict) -> None:
    """Remove the empty file this LOCK made, if it is still that file and still empty."""
    made = environ.pop(LOCK_MADE_FILE, None)
    if made is None:
        return
    path, dev, ino = made
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == (dev, ino) and stat.S_ISREG(info.st_mode) and info.st_size == 0:
            os.unlink(path)
    except OSError:
        pass


def _keep_permissions(folder_fd: int, name: str, fd: int) -> None:
    """Give the new file ``fd`` the mode and access ACL of the file it will replace, if any."""
    try:
        old = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(old.st_mode):
        return
    os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
    try:
        acl = os.getxattr(f"/proc/self/fd/{folder_fd}/{name}", ACL_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    os.setxattr(fd, ACL_XATTR, acl)


def listed(folder) -> list:
    """Blocking.  ``(entry, lstat)`` of each member of ``folder`` (a path or a descriptor) from one
    listing, less the temporary files of uploads in progress and members gone since the listing."""
    found = []
    with os.scandir(folder) as listing:
        for entry in listing:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                found.append((entry, entry.stat(follow_symlinks=False)))
            except OSError:
                continue  # gone since the listing
    return found


class HomeFolderResource(FolderResource):
    """A folder of the home: links that lead out and temporary uploads are not listed; ``info``,
    its ``lstat`` when the caller has it (checked), spares FolderResource's ``stat`` by path."""

    def __init__(self, path: str, environ: dict, file_path: str, info: Optional[os.stat_result] = None):
        if info is None:
            super().__init__(path, environ, file_path)
            return
        super(FolderResource, self).__init__(path, environ)  # DAVCollection's, without the stat
        self._file_path = file_path
        self.file_stat = info
        self.fs_opts = self.provider
        self.name = util.to_str(os.path.basename(file_path))

    def get_used_bytes(self):
        """No RFC 4331 quota properties: the figures would be the host disk's, shared by every site."""
        return None

    def get_available_bytes(self):
        return None

    def get_ref_url(self):
        return _ref_url(self, FolderResource)

    def get_member_list(self) -> list:
        """The members, from one listing with one ``lstat`` each (WsgiDAV resolves and stats every
        name again): folders and files only, no links, no uploads in progress."""
        members = []
        for entry, info in listed(self._file_path):
            path = util.join_uri(self.path, entry.name)
            if stat.S_ISREG(info.st_mode):
                members.append(HomeFileResource(path, self.environ, entry.path, info=info))
            elif stat.S_ISDIR(info.st_mode):
                members.append(HomeFolderResource(path, self.environ, entry.path, info=info))
        return members

    def get_member_names(self) -> list:
        """WsgiDAV's listing (without ``follow_symlinks`` it skips links and anything neither a
        file nor a folder), less the temporary files of uploads in progress."""
        return [name for name in super().get_member_names() if not name.startswith(TEMP_PREFIX)]

    def create_empty_resource(self, name):
        """For PUT nothing is made until the body is complete (see :class:`HomeFileResource`);
        for LOCK of an unmapped URL an empty file, as RFC 4918 says."""
        path = util.join_uri(self.path, name)
        file_path = self.provider._loc_to_file_path(path, self.environ)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            res = HomeFileResource(path, self.environ, file_path, pending=True)
            return res
        with _as_dav_errors():
            made = descriptors.create_file(file_path, self.provider.root_folder_path_real)
        self.environ[LOCK_MADE_FILE] = (file_path, made.st_dev, made.st_ino)
        return self.provider.get_resource_inst(path, self.environ)

    def create_collection(self, name):
        """MKCOL in this folder's checked descriptor (``mkdirat``)."""
        file_path = self.provider._loc_to_file_path(util.join_uri(self.path, name), self.environ)
        with _as_dav_errors():
            descriptors.make_folder(file_path, self.provider.root_folder_path_real)

    def delete(self):
        """DELETE of the folder and all in it, from its parent's checked descriptor, links never followed."""
        with _as_dav_errors():
            descriptors.remove_tree(self._file_path, self.provider.root_folder_path_real)
        self.environ.setdefault(REMOVED, set()).add(self.path)
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def copy_move_single(self, dest_path, *, is_move):
        """COPY of the folder alone (WsgiDAV copies its members one by one): made in the target's
        checked parent, dead properties copied."""
        provider = self.provider
        dest_file = provider._loc_to_file_path(dest_path, self.environ)
        if util.is_equal_or_child_uri(self.path, dest_path):
            raise _forbidden("a folder cannot be copied into itself")
        with _as_dav_errors():
            try:
                descriptors.make_folder(dest_file, provider.root_folder_path_real)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(dest_file).st_mode):
                    raise
        if provider.prop_manager:
            dest_url = provider.share_path + dest_path
            if is_move:
                provider.prop_manager.move_properties(self.get_ref_url(), dest_url, with_children=False,
                                                      environ=self.environ)
            else:
                provider.prop_manager.copy_properties(self.get_ref_url(), dest_url, self.environ)

    def support_recursive_move(self, dest_path):
        return _can_rename(self, dest_path)

    def move_recursive(self, dest_path):
        _move(self, dest_path)


class HomeProvider(FilesystemProvider):
    """One DAV root (a site's home, or a user's folder in it), with its site's locks and properties
    (:mod:`apiserver.dav.state`); always read-write (WsgiDAV's ``readonly`` stays False)."""

    def __init__(self, root: str):
        super().__init__(root, fs_opts={"follow_symlinks": False})
        self.root_folder_path = self.root_folder_path_real

    def _loc_to_file_path(self, path: str, environ: dict = None) -> str:
        """The host path of DAV ``path``: its folder resolved inside the root, its last part no link."""
        try:
            parts = split_site_path(path)
        except InvalidArgument as exc:
            raise _forbidden(exc.message) from None
        root = self.root_folder_path_real
        if not parts:
            return root
        if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in parts) or len(path) > PATH_MAX:
            raise DAVError(HTTP_BAD_REQUEST, f"a name may have at most {NAME_MAX} bytes, a path {PATH_MAX}")
        try:
            folder = os.path.realpath(os.path.join(root, *parts[:-1]))
        except OSError:  # a link on the way swapped while it was resolved (readlink of a link no more)
            raise _forbidden("the path changed while it was checked") from None
        if not is_inside(folder, root):
            raise _forbidden("the path leads out of the site's home")
        file_path = os.path.join(folder, parts[-1])
        if parts[-1].startswith(TEMP_PREFIX):
            raise _forbidden("names starting with .dav-upload- are reserved for uploads in progress")
        if os.path.islink(file_path):
            raise _forbidden("symbolic links are not served over DAV")
        return file_path

    def custom_request_handler(self, environ, start_response, default_handler):
        """Refuse PROPFIND with Depth infinity (403 with DAV:propfind-finite-depth, RFC 4918 9.1):
        one request would walk the whole home; Depth 0 and 1 of the common forms are answered by
        :mod:`apiserver.dav.propfind`.  A refused LOCK of an unmapped URL (conflict, a
        bound of the site) leaves no empty file behind."""
        default_handler.__self__.allow_propfind_infinite = False
        method = environ.get("REQUEST_METHOD")
        if method == "PROPFIND":
            answered = propfind.answer(self, environ, start_response)
            return default_handler(environ, start_response) if answered is None else answered
        if method != "LOCK":
            return default_handler(environ, start_response)
        statuses = []

        def start(status, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            result = default_handler(environ, start)
        except BaseException:
            _remove_lock_file(environ)
            raise
        if not statuses or not statuses[0].startswith("2"):
            _remove_lock_file(environ)
        return result

    # --- what apiserver.dav.propfind asks of a listing ---------------------------------------
    def check_inside(self, fd: int) -> None:
        """Raise when the open folder ``fd`` is not inside the root (a link swapped in)."""
        if not is_inside(fd_path(fd), self.root_folder_path_real):
            raise _forbidden("the folder is not inside the site's home")

    @staticmethod
    def listed(folder) -> list:
        """:func:`listed` (for :mod:`apiserver.dav.propfind`, which does not import this module)."""
        return listed(folder)

    @staticmethod
    def member_of(folder: "HomeFolderResource", name: str, info: os.stat_result):
        """The resource of member ``name`` (a file or folder, ``lstat`` ``info``) of ``folder``."""
        path = util.join_uri(folder.path, name)
        file_path = os.path.join(folder._file_path, name)
        if stat.S_ISDIR(info.st_mode):
            return HomeFolderResource(path, folder.environ, file_path, info=info)
        return HomeFileResource(path, folder.environ, file_path, info=info)

    def get_resource_inst(self, path: str, environ: dict):
        """The resource at DAV ``path``, from an ``lstat`` in its folder checked on the descriptor
        (:func:`descriptors.lstat_inside`): a folder swapped for a link after the path check is
        403, as the path check answers, never a stat of what the link leads to; None when nothing is there."""
        self._count_get_resource_inst += 1
        file_path = self._loc_to_file_path(path, environ)
        root = self.root_folder_path_real
        try:
            info = os.lstat(root) if file_path == root else descriptors.lstat_inside(file_path, root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except descriptors.OutsideHome:
            raise _forbidden("the path leads out of the site's home") from None
        if info is None:
            return None
        if stat.S_ISDIR(info.st_mode):
            return HomeFolderResource(path, environ, file_path, info=info)
        if stat.S_ISREG(info.st_mode):
            return HomeFileResource(path, environ, file_path, info=info)
        raise _forbidden("only files and folders are served over DAV")

    def exists(self, path: str, environ: dict) -> bool:
        """WsgiDAV's check after each DELETE that the resource is gone (else it answers 500): by
        :meth:`get_resource_inst`, so a folder swapped for a link since is 403, the path checks'
        verdict.  A path this DELETE removed (``unlinkat`` or ``rmtree`` on the checked folder,
        which raise when they fail) is gone even if something was made at its name since."""
        res = self.get_resource_inst(path, environ)
        return res is not None and path not in environ.get(REMOVED, ())


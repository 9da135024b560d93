"""Act as an account for file access, in the calling thread only (Linux file-system ids).

Blocking and thread-bound: :meth:`ThreadIdentity.acting_as` changes the file-system uid and gid
(``setfsuid``/``setfsgid``) and the supplementary groups of the calling thread alone, for the
length of a ``with`` block, and always puts back what the thread had.  The kernel then checks
every open, rename, unlink and mkdir of that thread as the account: another site's 0700 home is
refused even when a path check lost a race, and what the thread creates belongs to the account.
Once the file-system uid is not 0, the kernel also clears CAP_DAC_OVERRIDE, CAP_FOWNER and the
other file capabilities from the thread's effective set (capabilities(7)); they come back with
file-system uid 0.

The three are raw system calls: glibc's ``setgroups`` (and so ``os.setgroups``) changes every
thread of the process, the raw call only the caller.  A thread that cannot be put back is never
left serving requests as the wrong account: the process stops (exit status 70).

When the server does not run as root it cannot change identity: acting as its own uid is allowed
(nothing to change), any other uid is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import platform
import sys
import threading
from typing import Callable, Iterator, Optional

#: System call numbers (x86_64, and the generic table of aarch64 and riscv64).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152},
    "riscv64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152},
}
#: Exit status when a thread cannot be put back (EX_SOFTWARE).
EXIT_IDENTITY_LOST = 70
#: Most supplementary groups an identity may carry (Linux's NGROUPS_MAX is 65536).
MAX_GROUPS = 65536
#: Most group lists whose C arrays :class:`Syscalls` keeps built.
_MAX_GROUP_ARRAYS = 1024


@dataclasses.dataclass(frozen=True)
class FsIdentity:
    """Who the kernel checks file access as: ``uid``, ``gid`` and supplementary ``groups``
    (empty: ``gid`` alone); ``name`` only for messages."""

    uid: int
    gid: int
    groups: tuple = ()
    name: str = ""

    def __post_init__(self):
        for value in (self.uid, self.gid, *self.groups):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 32 - 1:
                raise ValueError(f"not a uid or gid: {value!r}")
        if len(self.groups) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} supplementary groups")

    @property
    def all_groups(self) -> tuple:
        return self.groups or (self.gid,)

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid})" if self.name else f"uid {self.uid}"


class IdentityError(OSError):
    """The thread could not take an identity (it was put back to what it had)."""


class Syscalls:
    """The raw calls, per thread.  Each returns what the kernel returns; tests replace one to fail."""

    def __init__(self):
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None:
            raise RuntimeError(f"acting as an account needs the system call numbers of {platform.machine()}")
        self._numbers = numbers
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._arrays: dict = {}  # groups tuple -> its C array (read only once built)

    def setfsuid(self, uid: int) -> int:
        """Set the fs uid; the previous one (with -1: the current one, nothing changed)."""
        return int(self._libc.syscall(self._numbers["setfsuid"], ctypes.c_uint(uid & 0xFFFFFFFF)))

    def setfsgid(self, gid: int) -> int:
        return int(self._libc.syscall(self._numbers["setfsgid"], ctypes.c_uint(gid & 0xFFFFFFFF)))

    def setgroups(self, groups: tuple) -> int:
        """0, or the errno."""
        array = self._arrays.get(groups)
        if array is None:  # the same few lists come back on every switch: built once
            if len(self._arrays) >= _MAX_GROUP_ARRAYS:
                self._arrays.clear()
            array = self._arrays[groups] = (ctypes.c_uint * max(len(groups), 1))(*groups)
        if self._libc.syscall(self._numbers["setgroups"], ctypes.c_size_t(len(groups)), array) != 0:
            return ctypes.get_errno() or -1
        return 0

    @staticmethod
    def getgroups() -> tuple:
        return tuple(os.getgroups())  # getgroups(2) reads the calling thread's credentials


def _stop_process(message: str) -> None:
    """Never return: a thread with the wrong identity must not serve another request."""
    try:
        sys.stderr.write(f"apiserver: {message}; stopping\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_IDENTITY_LOST)


#: Per thread: the ThreadIdentity blocks the thread is in, innermost last (for :func:`server_step`).
_acting = threading.local()


class ThreadIdentity:
    """Switches the calling thread's file-system identity (see the module's docstring).

    ``syscalls``: the kernel calls (tests pass one that fails); ``lost``: what happens when a
    thread cannot be put back (default: the process stops).
    """

    def __init__(self, syscalls: Optional[Syscalls] = None, lost: Optional[Callable[[str], None]] = None):
        self.privileged = os.geteuid() == 0
        self._calls = syscalls or (Syscalls() if self.privileged else None)
        self._lost = lost or _stop_process
        self._local = threading.local()

    def current(self) -> FsIdentity:
        """The calling thread's file-system identity (from the kernel)."""
        if self._calls is None:
            return FsIdentity(os.getuid(), os.getgid(), tuple(os.getgroups()))
        return FsIdentity(self._calls.setfsuid(-1), self._calls.setfsgid(-1), self._calls.getgroups())

    def depth(self) -> int:
        """How many ``acting_as`` blocks the calling thread is in."""
        return getattr(self._local, "depth", 0)

    def acting_as(self, identity: FsIdentity) -> "_ActingBlock":
        """Blocking.  Run the block with the thread's file access checked as ``identity``; put back after.

        IdentityError if the identity cannot be taken (root's uid or gid is never taken: an
        account is never root); PermissionError when the server is not root and ``identity`` is
        not its own uid.  Both are raised on entering the ``with`` block.
        """
        return _ActingBlock(self, identity)

    def _switch(self, identity: FsIdentity) -> FsIdentity:
        """Take ``identity`` (as :meth:`_take`); the identity the thread had, read from the kernel:
        its groups first, its fs uid and gid from what ``setfsgid``/``setfsuid`` return (the id in
        force before them, whether or not they succeed), so nothing is read twice."""
        calls = self._calls
        groups = calls.getgroups()
        errno_ = calls.setgroups(identity.all_groups)
        took = False
        if errno_ == 0:
            gid = calls.setfsgid(identity.gid)
            uid = calls.setfsuid(identity.uid)
            # Each call returns the id in force before it: a second call shows what took.
            took = calls.setfsuid(identity.uid) == identity.uid and calls.setfsgid(identity.gid) == identity.gid
        else:
            uid, gid = calls.setfsuid(-1), calls.setfsgid(-1)
        try:
            saved = FsIdentity(uid, gid, groups)
        except ValueError as exc:  # not ids the kernel keeps: nothing sure to put back
            self._lost(f"thread {threading.current_thread().name} had no identity to take back: {exc}")
            raise
        if took:
            return saved
        self._restore(saved)
        raise IdentityError(f"cannot act as {identity.describe()} for file access"
                            + (f": setgroups errno {errno_}" if errno_ else ""))

    @contextlib.contextmanager
    def _as_before(self, saved: FsIdentity) -> Iterator[None]:
        """The thread as it was before its outermost block (``saved``) for one step, then back."""
        acting = self.current()
        self._restore(saved)
        try:
            yield
        finally:
            try:
                self._take(acting, saved)
            except IdentityError:
                self._lost(f"thread {threading.current_thread().name} cannot act as {acting.describe()} again")
                raise

    def _take(self, identity: FsIdentity, saved: FsIdentity) -> None:
        calls = self._calls
        errno_ = calls.setgroups(identity.all_groups)
        if errno_ == 0:
            calls.setfsgid(identity.gid)
            calls.setfsuid(identity.uid)
            # Each call returns the id in force before it: a second call shows what took.
            if calls.setfsuid(identity.uid) == identity.uid and calls.setfsgid(identity.gid) == identity.gid:
                return
        self._restore(saved)
        raise IdentityError(f"cannot act as {identity.describe()} for file access"
                            + (f": setgroups errno {errno_}" if errno_ else ""))

    def _restore(self, saved: FsIdentity) -> None:
        calls = self._calls
        calls.setfsuid(saved.uid)
        calls.setfsgid(saved.gid)
        ok = calls.setgroups(saved.groups) == 0
        if not ok or calls.setfsuid(saved.uid) != saved.uid or calls.setfsgid(saved.gid) != saved.gid:
            self._lost(f"thread {threading.current_thread().name} cannot take back uid {saved.uid} "
                       f"after acting as another account")


class _ActingBlock:
    """The ``with`` block of :meth:`ThreadIdentity.acting_as` (a class, not a generator: it runs
    on every DAV request, on the reactor too)."""

    __slots__ = ("threads", "identity", "saved")

    def __init__(self, threads: ThreadIdentity, identity: FsIdentity):
        self.threads = threads
        self.identity = identity
        self.saved: Optional[FsIdentity] = None

    def __enter__(self) -> FsIdentity:
        threads, identity = self.threads, self.identity
        if identity.uid == 0 or identity.gid == 0:
            raise IdentityError(f"refusing to act as {identity.describe()} with root's uid or gid")
        if not threads.privileged:
            if identity.uid != os.geteuid():
                raise PermissionError(f"the server does not run as root and cannot act as {identity.describe()}")
            return identity
        if self.saved is not None:
            raise RuntimeError("an acting_as block is entered once")
        saved = threads._switch(identity)
        self.saved = saved
        threads._local.depth = threads.depth() + 1
        blocks = _acting.__dict__.setdefault("blocks", [])
        blocks.append((threads, saved))
        return identity

    def __exit__(self, *exc_info) -> bool:
        saved = self.saved
        if saved is not None:
            threads = self.threads
            _acting.blocks.pop()
            threads._local.depth -= 1
            threads._restore(saved)
        return False


def server_step():
    """Blocking.  A ``with`` block in which the calling thread is the server again (root), when it is
    acting as an account; nothing changes otherwise.  Only for a step on something already opened
    as the account (``fchown`` of an open descriptor), or on the server's own storage (a DAV
    thread's database or Redis call): nothing in it may resolve a path a client named."""
    blocks = getattr(_acting, "blocks", None)
    if not blocks:
        return contextlib.nullcontext()
    threads, saved = blocks[0]
    return threads._as_before(saved)


class SiteFiles:
    """Runs blocking work on a site's files as the site's account, so the kernel checks it.

    ``threads``: switches the calling thread; ``site_homes``: lets each account reach the sites
    (:meth:`apiserver.sites.home.SiteHomes.let_reach`, once per uid, as root); ``identity_of(home,
    user)`` (blocking): the identity of the site's administrator (``user`` None) or of one of its
    users (default: the home's owner, :func:`owner_identity`).
    """

    def __init__(self, threads: ThreadIdentity, site_homes, identity_of: Optional[Callable] = None):
        self.threads = threads
        self.site_homes = site_homes
        self.identity_of = identity_of or owner_identity
        self._reachable_by: set = set()
        self._lock = threading.Lock()

    def reach(self, identity: FsIdentity) -> None:
        """Blocking; as the server (root).  Let ``identity`` pass the folders above ``sites_root``."""
        if identity.uid in self._reachable_by or not self.threads.privileged:
            return
        with self._lock:
            if identity.uid not in self._reachable_by:  # another thread may have granted it meanwhile
                self.site_homes.let_reach(identity.name or str(identity.uid))
                self._reachable_by.add(identity.uid)

    @contextlib.contextmanager
    def acting(self, home, user: Optional[str] = None) -> Iterator[FsIdentity]:
        """Blocking.  A ``with`` block run as the account of ``home`` (its administrator, or ``user``)."""
        identity = self.identity_of(home, user)
        self.reach(identity)
        with self.threads.acting_as(identity):
            yield identity

    def run(self, home, fn: Callable, *args, **kwargs):
        """Blocking.  ``fn(*args, **kwargs)`` as the administrator of ``home``."""
        with self.acting(home):
            return fn(*args, **kwargs)


def owner_identity(home, user: Optional[str] = None) -> FsIdentity:
    """Every account of a site whose files belong to one owner: the home's owner (``home.owner``)."""
    owner = home.owner
    return FsIdentity(owner.uid, owner.gid, (owner.gid,), owner.name)


def account_identities(site_accounts) -> Callable:
    """``identity_of(home, user)`` over the sites' system accounts (:class:`apiserver.host.SiteAccounts`):
    a user of a site acts as its own system user (its uid, the site's gid); the administrator, and
    every account while system accounts are off, as the home's owner (the document root's)."""
    def identity_of(home, user: Optional[str] = None) -> FsIdentity:
        if user is None or not site_accounts.enabled or getattr(home, "site_id", None) is None:
            return owner_identity(home)
        host = site_accounts.identity(home.site_id, user)
        return FsIdentity(host.uid, host.gid, (host.gid,), host.host_name)

    return identity_of


class ActingIterator:
    """A WSGI body whose every step (``next``, ``close``) runs as ``identity``: the thread acts as
    the account only while the application works, whichever thread takes the next step.

    ``body`` is the application's body or, for :meth:`of_call`, made by the first step.  The step
    that finds the body ended closes it in the same block (a later ``close`` has nothing left to
    do): one identity switch fewer per request.
    """

    def __init__(self, body, identity: FsIdentity, threads: ThreadIdentity, make: Optional[Callable] = None):
        self._body = body
        self._make = make
        self._iter = None
        self._closed = False
        self.identity = identity
        self._threads = threads

    @classmethod
    def of_call(cls, make: Callable, identity: FsIdentity, threads: ThreadIdentity) -> "ActingIterator":
        """The body ``make()`` returns, called (as ``identity``) by the first step: the application
        call and its first chunk in one block."""
        return cls(None, identity, threads, make)

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        with self._threads.acting_as(self.identity):
            if self._iter is None:
                if self._make is not None:
                    make, self._make = self._make, None
                    self._body = make()
                self._iter = iter(self._body)
            try:
                return next(self._iter)
            except StopIteration:
                self._close_body()
                raise

    def _close_body(self) -> None:
        self._closed = True
        close = getattr(self._body, "close", None)
        if close is not None:
            close()

    def close(self):
        if self._closed or self._make is not None:  # closed already, or never made
            self._closed = True
            return
        if getattr(self._body, "close", None) is None:
            self._closed = True
            return
        with self._threads.acting_as(self.identity):
            self._close_body()

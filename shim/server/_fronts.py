"""The create server's ends of what it shares with the fronts, and who may use them.

Its directory and FIFOs (only the server's owner may write them: anything else there is
refused or replaced), the `alive` FIFO whose writers tell a front's waiter that someone will
answer, and the pipe a worker answers a front on: the waiter's stdout, taken through /proc,
or the reply FIFO of a front rendered before the waiter's pipe. Standard library only.
"""

from __future__ import annotations

import os
import stat

REPLY_WAIT_SECONDS = 5.0  # how long a child waits for its front to open the reply FIFO
WAITER_FD = 9  # the front's waiter keeps its stdout (the front's answer pipe) there too


def secure_dir(path: str) -> None:
    """Create `path` (0700) or accept it only when it is ours and nobody else can write it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a directory only this user can use")


def fifo(path: str) -> None:
    """A FIFO at `path` owned by us, mode 0600 (anything else there is replaced)."""
    try:
        st = os.lstat(path)
        if stat.S_ISFIFO(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o600)


def fresh_alive(path: str) -> int:
    """A new `alive` FIFO at `path` (temp + rename: the path never goes missing, and a
    previous server's watchers keep the old one, whose writers are gone), open for writing.
    O_RDWR: opening never blocks; O_CLOEXEC: what a child execs (nix) does not hold it."""
    temp = f"{path}.{os.getpid()}"
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    os.mkfifo(temp, 0o600)
    os.rename(temp, path)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def node_config_of(environ: list[bytes]) -> str | None:
    for item in environ:
        if item.startswith(b"FLOXK_NODE_CONFIG="):
            return os.fsdecode(item.partition(b"=")[2])
    return None


class _ReplyTimeout(Exception):
    pass


def open_pidfd(pid: int) -> int:
    """A pidfd of `pid` (a signal through it reaches that process, never a later one with
    its pid), or -1 where the kernel or Python has none (then nothing is killed on a guess
    but the waiter take_pipe opens the pipe of)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError, OverflowError):
        return -1


def waiter_parent(waiter: int, alive: tuple[int, int]) -> int | None:
    """The parent of `waiter` when it is provably a front's waiter of this server, else
    None: ours (uid), its fd 4 our `alive` FIFO (`alive`: its st_dev, st_ino) open read-only
    (the server and its workers hold it read-write: only waiters read it), its WAITER_FD a
    pipe. Read through /proc/WAITER: the caller confirms with still() on a pidfd it opened
    first that these reads were about the process the pidfd names."""
    proc = f"/proc/{waiter}"
    try:
        st = os.stat(proc)
        with open(f"{proc}/stat", "rb") as f:
            ppid = int(f.read().rpartition(b")")[2].split()[1])
        fd4 = os.stat(f"{proc}/fd/4")
        with open(f"{proc}/fdinfo/4", "rb") as f:
            flags = int(f.read().partition(b"flags:")[2].split()[0], 8)
        fd9 = os.stat(f"{proc}/fd/{WAITER_FD}")
    except (OSError, IndexError, ValueError):
        return None
    if (
        st.st_uid != os.geteuid()
        or (fd4.st_dev, fd4.st_ino) != alive
        or flags & os.O_ACCMODE != os.O_RDONLY
        or not stat.S_ISFIFO(fd9.st_mode)
    ):
        return None
    return ppid


def still(pidfd: int) -> bool:
    """Whether the process `pidfd` names has not been reaped: then its pid is not reused,
    and what was read through /proc/PID since the pidfd was opened was about it."""
    import signal

    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


def end_waiter(waiter: int, pidfd: int, alive: tuple[int, int], how: int | None = None) -> bool:
    """Kill `waiter` (signal `how`, default quiet_kill's) if it is provably a waiter of
    ours (waiter_parent) and `pidfd` (opened before) still names it; True if signalled."""
    import signal

    if pidfd < 0 or waiter_parent(waiter, alive) is None:
        return False
    if how is None:
        how = quiet_kill(waiter)
    if not still(pidfd):
        return False
    try:
        signal.pidfd_send_signal(pidfd, how)
    except OSError:
        return False
    return True


def take_pipe(front: int, waiter: int, alive: tuple[int, int]) -> int | None:
    """The write end of the pipe front `front` reads its answer from: the stdout of its
    `waiter` (a subshell of it, blocked on the `alive` FIFO), opened through /proc (its copy
    on WAITER_FD: fd 1 is the requests FIFO while it sends the request); then the waiter is
    killed (quiet_kill), so this worker holds the only write end: the front reads our
    answer, or EOF if we die. None when `waiter` is not a waiter of ours (waiter_parent)
    child of `front`; a waiter of ours whose front is gone (killed while its request
    waited: it was reparented) is killed then, or it would sleep until the server leaves."""
    import signal

    pidfd = open_pidfd(waiter)
    try:
        parent = waiter_parent(waiter, alive)
        if parent is None:
            return None
        if parent != front:
            end_waiter(waiter, pidfd, alive, signal.SIGKILL)  # nobody reads its pipe
            return None
        try:
            fd = os.open(f"/proc/{waiter}/fd/{WAITER_FD}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:  # (out of fds): no way to answer; EOF fails the create now
            end_waiter(waiter, pidfd, alive)
            return None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or (pidfd >= 0 and not still(pidfd)):
            os.close(fd)  # not a pipe, or opened from a later process with its pid
            return None
        try:
            how = quiet_kill(waiter)
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, how)
            else:
                os.kill(waiter, how)
        except OSError:
            pass  # it is gone already
        return fd
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def quiet_kill(waiter: int) -> int:
    """SIGPIPE, the one death sh does not report on the front's stderr (runc's, which
    containerd logs) -- unless the waiter ignores or blocks it (inherited): then SIGKILL."""
    import signal

    bit = 1 << (signal.SIGPIPE - 1)
    try:
        with open(f"/proc/{waiter}/status", "rb") as f:
            for line in f:
                if line.startswith((b"SigBlk:", b"SigIgn:")):
                    if int(line.split()[1], 16) & bit:
                        return signal.SIGKILL
                    if line.startswith(b"SigIgn:"):
                        break
    except (OSError, ValueError, IndexError):
        return signal.SIGKILL
    return signal.SIGPIPE


def _reply_timeout(signum, frame) -> None:
    raise _ReplyTimeout()


def open_reply(path: str) -> int | None:
    """Open the front's reply FIFO for writing (this waits until the front has it open for
    reading: it does so right after sending the request) and unlink it. None when there is
    no such FIFO of ours or its front does not open it within REPLY_WAIT_SECONDS."""
    import signal

    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    previous = signal.signal(signal.SIGALRM, _reply_timeout)
    signal.setitimer(signal.ITIMER_REAL, REPLY_WAIT_SECONDS)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (OSError, _ReplyTimeout):
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        os.unlink(path)
    except OSError:
        pass
    return fd

"""
Pgpool-II's pool_passwd file: the secrets the proxy authenticates clients
with, and logs in to backends with.

One C{user:secret} line per user; C{#} comments and blank lines are ignored.
The secret's prefix says what it is:

  - C{md5} and 32 hex digits: PostgreSQL's MD5 hash of password + user name;
  - C{SCRAM-SHA-256$...}: a SCRAM verifier in PostgreSQL's text form;
  - C{TEXT}: the rest of the line is the password in clear;
  - C{AES}: Pgpool-II's AES-256-CBC encrypted password.  Recognised so such
    a file loads, but not decrypted yet: using such an entry raises
    L{UnsupportedSecretError} with an explanation;
  - anything else: the whole secret is the password in clear.

The secret starts right after the first colon, so a user name cannot contain
one and a password can.  When a user appears twice the first line wins, as
in Pgpool-II.

L{run_passwd_command} is the C{twisted-pgpool passwd} command that maintains
the file, in the spirit of C{pg_md5 -m}.
"""

from __future__ import annotations

import argparse
import getpass as getpass_module
import os
import stat
import sys
import tempfile
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attr

from twisted_pgpool.auth.md5 import is_md5_hash, md5_password_hash
from twisted_pgpool.auth.scram import (
    ScramError,
    ScramVerifier,
    format_verifier,
    make_verifier,
    parse_verifier,
)

__all__ = [
    "KIND_MD5",
    "KIND_SCRAM",
    "KIND_TEXT",
    "KIND_AES",
    "PasswdError",
    "UnsupportedSecretError",
    "PasswdEntry",
    "PoolPasswd",
    "write_entry",
    "run_passwd_command",
]

KIND_MD5 = "md5"
KIND_SCRAM = "scram"
KIND_TEXT = "text"
KIND_AES = "aes"
_KINDS = (KIND_MD5, KIND_SCRAM, KIND_TEXT, KIND_AES)

_TEXT_PREFIX = "TEXT"
_AES_PREFIX = "AES"
_SCRAM_PREFIX = "SCRAM-SHA-256$"


class PasswdError(Exception):
    """
    pool_passwd could not be read or written, or an entry cannot be used.
    Messages name the file and line where there is one.
    """


class UnsupportedSecretError(PasswdError):
    """
    The entry exists but its kind of secret cannot be used (AES-encrypted
    entries, for now).  Raised on use rather than on load, so one such entry
    does not stop every other user from logging in.
    """


def _entry_kind(instance: object, attribute: "attr.Attribute[str]", value: str) -> None:
    if value not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {value!r}")


@attr.frozen
class PasswdEntry:
    """
    One user's line of pool_passwd.

    The secret is left out of C{repr} so an entry that reaches a log does not
    leak it.

    @ivar user: The user name.
    @ivar kind: One of L{KIND_MD5}, L{KIND_SCRAM}, L{KIND_TEXT}, L{KIND_AES}.
    @ivar secret: For C{md5} the hash with its C{md5} prefix, for C{scram}
        the verifier text, for C{text} the password, for C{aes} the base64
        ciphertext without its C{AES} prefix.
    """

    user: str
    kind: str = attr.field(validator=_entry_kind)
    secret: str = attr.field(repr=False)
    # Holds the parsed or derived verifier: deriving one from a clear-text
    # password costs a PBKDF2 run, too much to repeat on every login.
    _cache: Dict[str, ScramVerifier] = attr.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )

    @classmethod
    def from_stored(cls, user: str, stored: str) -> "PasswdEntry":
        """
        Classify a secret as written in pool_passwd.

        @param user: The user name.
        @param stored: The text after the colon.
        @return: The entry.
        @raise PasswdError: If the secret claims to be a SCRAM verifier but is
            malformed (a typo there would otherwise become a clear-text
            password).
        """
        if is_md5_hash(stored.lower()) and stored.startswith("md5"):
            # Hex digits are normalised to lowercase: the client computes its
            # answer from the lowercase form.
            return cls(user, KIND_MD5, stored.lower())
        if stored.startswith(_SCRAM_PREFIX):
            try:
                verifier = parse_verifier(stored)
            except ScramError as e:
                raise PasswdError(str(e)) from None
            entry = cls(user, KIND_SCRAM, stored)
            entry._cache[KIND_SCRAM] = verifier
            return entry
        if stored.startswith(_TEXT_PREFIX):
            return cls(user, KIND_TEXT, stored[len(_TEXT_PREFIX) :])
        if stored.startswith(_AES_PREFIX):
            return cls(user, KIND_AES, stored[len(_AES_PREFIX) :])
        return cls(user, KIND_TEXT, stored)

    @property
    def stored(self) -> str:
        """
        The secret as it is written in pool_passwd, prefix included.  Clear
        text always gets the C{TEXT} prefix so it cannot be mistaken for
        another kind.
        """
        if self.kind == KIND_TEXT:
            return _TEXT_PREFIX + self.secret
        if self.kind == KIND_AES:
            return _AES_PREFIX + self.secret
        return self.secret

    def _refuse_unsupported(self) -> None:
        if self.kind == KIND_AES:
            raise UnsupportedSecretError(
                f'the pool_passwd entry for user "{self.user}" is AES-encrypted, which '
                "twisted_pgpool cannot decrypt yet; store it as TEXT, md5 or "
                "SCRAM-SHA-256 instead (twisted-pgpool passwd)"
            )

    @property
    def plaintext(self) -> Optional[str]:
        """
        The clear-text password, or C{None} when only a hash is on file.

        @raise UnsupportedSecretError: For an AES entry.
        """
        self._refuse_unsupported()
        return self.secret if self.kind == KIND_TEXT else None

    @property
    def md5_hash(self) -> Optional[str]:
        """
        The MD5 hash (C{md5...}) that answers MD5 challenges for this user:
        stored, or computed from the clear-text password.  C{None} for a
        SCRAM entry, from which no MD5 hash can be derived.

        @raise UnsupportedSecretError: For an AES entry.
        """
        self._refuse_unsupported()
        if self.kind == KIND_MD5:
            return self.secret
        if self.kind == KIND_TEXT:
            return md5_password_hash(self.secret, self.user)
        return None

    @property
    def scram_verifier(self) -> Optional[ScramVerifier]:
        """
        The SCRAM verifier to check this user's SCRAM logins with: the stored
        one, or one derived once from the clear-text password with a random
        salt kept for the life of this entry.  C{None} for an MD5 entry, from
        which no verifier can be derived.

        @raise UnsupportedSecretError: For an AES entry.
        """
        self._refuse_unsupported()
        cached = self._cache.get(KIND_SCRAM)
        if cached is not None:
            return cached
        if self.kind == KIND_SCRAM:
            verifier = parse_verifier(self.secret)
        elif self.kind == KIND_TEXT:
            verifier = make_verifier(self.secret)
        else:
            return None
        self._cache[KIND_SCRAM] = verifier
        return verifier


def _is_ignored(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _strip_line_ending(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_number = data[: e.start].count(b"\n") + 1
        raise PasswdError(f"{source}:{line_number}: not valid UTF-8") from None


@attr.frozen
class PoolPasswd:
    """
    The parsed contents of a pool_passwd file.

    @ivar source: Where the entries came from, for messages.
    """

    source: str
    _entries: Mapping[str, PasswdEntry] = attr.field(repr=False)

    @classmethod
    def parse(cls, text: str, source: str = "pool_passwd") -> "PoolPasswd":
        """
        Parse pool_passwd contents.

        @param text: The file's text.
        @param source: Name used in error messages.
        @raise PasswdError: Naming C{source:line} for a line that is not
            C{user:secret} or holds a malformed SCRAM verifier.
        """
        entries: Dict[str, PasswdEntry] = {}
        for line_number, raw in enumerate(text.splitlines(), start=1):
            line = _strip_line_ending(raw)
            if _is_ignored(line):
                continue
            user, colon, stored = line.partition(":")
            if not colon:
                raise PasswdError(f"{source}:{line_number}: expected user:password")
            if not user:
                raise PasswdError(f"{source}:{line_number}: empty user name")
            try:
                entry = PasswdEntry.from_stored(user, stored)
            except PasswdError as e:
                raise PasswdError(f"{source}:{line_number}: {e}") from None
            entries.setdefault(user, entry)
        return cls(source, entries)

    @classmethod
    def load(cls, path: str) -> "PoolPasswd":
        """
        Read a pool_passwd file.  A missing file is an empty one, as in
        Pgpool-II, so a fresh installation starts.

        @param path: The file.
        @raise PasswdError: If the file cannot be read or a line is bad.
        """
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return cls(path, {})
        except OSError as e:
            raise PasswdError(f"{path}: cannot read: {e.strerror}") from None
        return cls.parse(_decode(data, path), path)

    def lookup(self, user: str) -> Optional[PasswdEntry]:
        """
        @return: The user's entry, or C{None}.
        """
        return self._entries.get(user)

    def users(self) -> List[str]:
        """
        @return: The user names with an entry, in file order.
        """
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


_WRITE_KINDS = (KIND_MD5, KIND_SCRAM, KIND_TEXT)


def _check_user(user: str) -> None:
    if not user:
        raise PasswdError("the user name is empty")
    if ":" in user or "\n" in user or "\r" in user:
        raise PasswdError("a pool_passwd user name cannot contain ':' or a line break")
    if _is_ignored(user + ":"):
        raise PasswdError("a pool_passwd user name cannot start with '#'")


def _check_password(password: str) -> None:
    if not password:
        raise PasswdError("the password is empty")
    if "\n" in password or "\r" in password or "\x00" in password:
        raise PasswdError("a password cannot contain a line break or a NUL character")


def _stored_secret(user: str, password: str, kind: str) -> str:
    if kind == KIND_MD5:
        return md5_password_hash(password, user)
    if kind == KIND_SCRAM:
        return format_verifier(make_verifier(password))
    return _TEXT_PREFIX + password


def replace_user_line(lines: Sequence[str], user: str, new_line: str) -> Tuple[List[str], bool]:
    """
    Put C{new_line} in place of the user's first line, drop the user's later
    (dead) lines, keep everything else.

    @return: The new lines and whether the user was already there.
    """
    result: List[str] = []
    replaced = False
    for line in lines:
        content = _strip_line_ending(line)
        if not _is_ignored(content) and content.partition(":")[0] == user:
            if not replaced:
                result.append(new_line)
                replaced = True
            continue
        result.append(line)
    if not replaced:
        if result and not result[-1].endswith("\n"):
            result[-1] += "\n"
        result.append(new_line)
    return result, replaced


def write_atomically(path: str, text: str) -> None:
    """
    Replace C{path} with C{text} so readers see the old file or the new one,
    never half of either.  An existing file keeps its mode and (when we may)
    its owner; a new one is created 0600, since it holds password
    equivalents.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        existing: Optional[os.stat_result] = os.stat(target)
    except FileNotFoundError:
        existing = None
    descriptor, temporary = tempfile.mkstemp(
        prefix="." + os.path.basename(target) + ".", dir=directory
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if existing is None:
            os.chmod(temporary, 0o600)
        else:
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            if hasattr(os, "chown"):
                try:
                    os.chown(temporary, existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def write_entry(path: str, user: str, password: str, kind: str = KIND_MD5) -> bool:
    """
    Add or replace one user's line in a pool_passwd file.

    Other lines, comments included, are kept as they are; the file is
    replaced atomically.

    @param path: The pool_passwd file; created (mode 0600) if missing.
    @param user: The user name.
    @param password: The clear-text password.
    @param kind: C{"md5"}, C{"scram"} (a verifier with a fresh salt) or
        C{"text"} (stored with the C{TEXT} prefix).
    @return: C{True} if the user already had a line, C{False} if one was
        added.
    @raise PasswdError: For a bad user name, password or kind, or when the
        file cannot be read or written.
    """
    if kind not in _WRITE_KINDS:
        raise PasswdError(f"cannot write a {kind!r} entry; use one of {', '.join(_WRITE_KINDS)}")
    _check_user(user)
    _check_password(password)
    new_line = f"{user}:{_stored_secret(user, password, kind)}\n"
    try:
        with open(path, "rb") as f:
            lines = _decode(f.read(), path).splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    except OSError as e:
        raise PasswdError(f"{path}: cannot read: {e.strerror}") from None
    result, replaced = replace_user_line(lines, user, new_line)
    try:
        write_atomically(path, "".join(result))
    except OSError as e:
        raise PasswdError(f"{path}: cannot write: {e.strerror}") from None
    return replaced


_METHOD_KINDS = {"md5": KIND_MD5, "scram-sha-256": KIND_SCRAM, "text": KIND_TEXT}


class _Parser(argparse.ArgumentParser):
    """
    argparse, writing to the streams the command was given instead of the
    process's, and raising instead of exiting.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._stdout = stdout
        self._stderr = stderr

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self._stderr if file is sys.stderr else self._stdout).write(message)


def _build_parser(stdout: IO[str], stderr: IO[str]) -> _Parser:
    parser = _Parser(
        stdout,
        stderr,
        prog="twisted-pgpool passwd",
        description="Add or replace a user's password in a pool_passwd file.",
    )
    parser.add_argument("user", help="the user name")
    parser.add_argument(
        "--file", default="pool_passwd", help="the pool_passwd file (default: ./pool_passwd)"
    )
    parser.add_argument(
        "--method",
        choices=sorted(_METHOD_KINDS),
        default="md5",
        help="how to store the password (default: md5, like pg_md5 -m)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )
    return parser


def _read_password(from_stdin: bool, stdin: IO[str], getpass: Callable[[str], str]) -> str:
    if from_stdin:
        line = stdin.readline()
        return _strip_line_ending(line)
    first = getpass("Password: ")
    second = getpass("Password (again): ")
    if first != second:
        raise PasswdError("the passwords do not match")
    return first


def run_passwd_command(
    argv: List[str],
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    getpass: Callable[[str], str] = getpass_module.getpass,
) -> int:
    """
    The C{twisted-pgpool passwd USER [--file PATH] [--method
    md5|scram-sha-256|text] [--password-stdin]} command.

    The default method is md5, what C{pg_md5 -m} writes; choose
    C{scram-sha-256} or C{text} for users whose clients or backends use
    SCRAM (an md5 entry cannot serve SCRAM).

    @param argv: The arguments after C{passwd}.
    @param stdin: Where C{--password-stdin} reads; C{sys.stdin} by default.
    @param stdout: Where the result is reported; C{sys.stdout} by default.
    @param stderr: Where errors go; C{sys.stderr} by default.
    @param getpass: Prompts for a password without echo; tests replace it.
    @return: The exit code: 0 on success, 1 on failure, 2 for bad usage.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = _build_parser(stdout, stderr)
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        password = _read_password(options.password_stdin, stdin, getpass)
        kind = _METHOD_KINDS[options.method]
        replaced = write_entry(options.file, options.user, password, kind)
    except (EOFError, KeyboardInterrupt):
        stderr.write(f"{parser.prog}: error: no password given\n")
        return 1
    except PasswdError as e:
        stderr.write(f"{parser.prog}: error: {e}\n")
        return 1
    action = "replaced" if replaced else "added"
    stdout.write(f'{action} {options.method} entry for user "{options.user}" in {options.file}\n')
    return 0

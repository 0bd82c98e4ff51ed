"""
Tests for L{twisted_pgpool.auth.passwd}: reading every kind of pool_passwd entry,
what each kind can be turned into, rewriting the file, and the
C{twisted-pgpool passwd} command.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Callable, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.auth.md5 import md5_password_hash
from twisted_pgpool.auth.passwd import (
    KIND_AES,
    KIND_MD5,
    KIND_SCRAM,
    KIND_TEXT,
    PasswdEntry,
    PasswdError,
    PoolPasswd,
    UnsupportedSecretError,
    run_passwd_command,
    write_entry,
)
from twisted_pgpool.auth.scram import format_verifier, make_verifier, verify_plain_password

ALICE_MD5 = md5_password_hash("wonderland", "alice")
BOB_SCRAM = format_verifier(make_verifier("builder", salt=b"0123456789abcdef"))


class ParseTests(SynchronousTestCase):
    def test_md5_entry(self) -> None:
        entry = PoolPasswd.parse(f"alice:{ALICE_MD5}\n").lookup("alice")
        self.assertEqual(entry, PasswdEntry("alice", KIND_MD5, ALICE_MD5))

    def test_md5_entry_with_uppercase_hex_is_normalised(self) -> None:
        text = "alice:md5" + ALICE_MD5[3:].upper()
        entry = PoolPasswd.parse(text).lookup("alice")
        assert entry is not None
        self.assertEqual((entry.kind, entry.secret), (KIND_MD5, ALICE_MD5))

    def test_scram_entry(self) -> None:
        entry = PoolPasswd.parse(f"bob:{BOB_SCRAM}").lookup("bob")
        self.assertEqual(entry, PasswdEntry("bob", KIND_SCRAM, BOB_SCRAM))

    def test_text_prefixed_entry(self) -> None:
        entry = PoolPasswd.parse("carol:TEXTmd5 looks like a hash").lookup("carol")
        self.assertEqual(entry, PasswdEntry("carol", KIND_TEXT, "md5 looks like a hash"))

    def test_unprefixed_entry_is_clear_text(self) -> None:
        entry = PoolPasswd.parse("dave:plain password").lookup("dave")
        self.assertEqual(entry, PasswdEntry("dave", KIND_TEXT, "plain password"))

    def test_aes_entry_is_recognised(self) -> None:
        entry = PoolPasswd.parse("erin:AESdGhpcyBpcyBub3QgcmVhbA==").lookup("erin")
        self.assertEqual(entry, PasswdEntry("erin", KIND_AES, "dGhpcyBpcyBub3QgcmVhbA=="))

    def test_md5_prefix_without_a_hash_is_clear_text(self) -> None:
        # As in PostgreSQL: only "md5" + 32 hex digits is a hash.
        entry = PoolPasswd.parse("frank:md5notahash").lookup("frank")
        self.assertEqual(entry, PasswdEntry("frank", KIND_TEXT, "md5notahash"))

    def test_password_may_contain_colons(self) -> None:
        entry = PoolPasswd.parse("gina:a:b:c").lookup("gina")
        assert entry is not None
        self.assertEqual(entry.plaintext, "a:b:c")

    def test_comments_blank_lines_and_crlf(self) -> None:
        text = "# users\r\n\r\n   \r\n  # indented comment\r\nalice:pw1\r\nbob:pw2"
        passwd = PoolPasswd.parse(text)
        self.assertEqual(passwd.users(), ["alice", "bob"])
        entry = passwd.lookup("alice")
        assert entry is not None
        self.assertEqual(entry.plaintext, "pw1")

    def test_first_line_for_a_user_wins(self) -> None:
        passwd = PoolPasswd.parse("alice:first\nalice:second\n")
        entry = passwd.lookup("alice")
        assert entry is not None
        self.assertEqual(entry.plaintext, "first")
        self.assertEqual(len(passwd), 1)

    def test_unknown_user(self) -> None:
        self.assertIsNone(PoolPasswd.parse("alice:x").lookup("bob"))

    def test_line_without_colon_names_file_and_line(self) -> None:
        error = self.assertRaises(
            PasswdError, PoolPasswd.parse, "# c\nalice:x\nbob\n", "/etc/pool_passwd"
        )
        self.assertTrue(str(error).startswith("/etc/pool_passwd:3: "), str(error))

    def test_empty_user_is_an_error(self) -> None:
        error = self.assertRaises(PasswdError, PoolPasswd.parse, ":secret")
        self.assertIn("pool_passwd:1: empty user name", str(error))

    def test_malformed_scram_verifier_is_an_error(self) -> None:
        error = self.assertRaises(PasswdError, PoolPasswd.parse, "a:x\nbob:SCRAM-SHA-256$4096:xx")
        self.assertIn("pool_passwd:2: malformed SCRAM-SHA-256 secret", str(error))


class EntryHelperTests(SynchronousTestCase):
    def test_text_entry_gives_everything(self) -> None:
        entry = PasswdEntry("alice", KIND_TEXT, "wonderland")
        self.assertEqual(entry.plaintext, "wonderland")
        self.assertEqual(entry.md5_hash, ALICE_MD5)
        verifier = entry.scram_verifier
        assert verifier is not None
        self.assertTrue(verify_plain_password(verifier, "wonderland"))

    def test_derived_verifier_is_computed_once(self) -> None:
        entry = PasswdEntry("alice", KIND_TEXT, "wonderland")
        self.assertIs(entry.scram_verifier, entry.scram_verifier)

    def test_derived_verifiers_of_different_entries_have_different_salts(self) -> None:
        first = PasswdEntry("alice", KIND_TEXT, "wonderland").scram_verifier
        second = PasswdEntry("alice", KIND_TEXT, "wonderland").scram_verifier
        assert first is not None and second is not None
        self.assertNotEqual(first.salt, second.salt)

    def test_md5_entry_gives_only_the_hash(self) -> None:
        entry = PasswdEntry("alice", KIND_MD5, ALICE_MD5)
        self.assertEqual(
            (entry.plaintext, entry.md5_hash, entry.scram_verifier), (None, ALICE_MD5, None)
        )

    def test_scram_entry_gives_only_the_verifier(self) -> None:
        entry = PoolPasswd.parse(f"bob:{BOB_SCRAM}").lookup("bob")
        assert entry is not None
        self.assertEqual((entry.plaintext, entry.md5_hash), (None, None))
        verifier = entry.scram_verifier
        assert verifier is not None
        self.assertEqual(format_verifier(verifier), BOB_SCRAM)

    def test_aes_entry_use_is_a_clear_error(self) -> None:
        entry = PasswdEntry("erin", KIND_AES, "Zm9v")
        for helper in ("plaintext", "md5_hash", "scram_verifier"):
            error = self.assertRaises(UnsupportedSecretError, getattr, entry, helper)
            self.assertIn("AES", str(error))
            self.assertIn('"erin"', str(error))

    def test_stored_form_has_prefixes(self) -> None:
        self.assertEqual(PasswdEntry("a", KIND_TEXT, "pw").stored, "TEXTpw")
        self.assertEqual(PasswdEntry("a", KIND_AES, "Zm9v").stored, "AESZm9v")
        self.assertEqual(PasswdEntry("a", KIND_MD5, ALICE_MD5).stored, ALICE_MD5)

    def test_repr_hides_secret(self) -> None:
        self.assertNotIn("wonderland", repr(PasswdEntry("alice", KIND_TEXT, "wonderland")))

    def test_unknown_kind_is_refused(self) -> None:
        self.assertRaises(ValueError, PasswdEntry, "a", "plain", "x")


class TempDirMixin:
    mktemp: Callable[[], str]

    def make_dir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path


class LoadTests(SynchronousTestCase, TempDirMixin):
    def test_missing_file_is_empty(self) -> None:
        passwd = PoolPasswd.load(os.path.join(self.make_dir(), "nope"))
        self.assertEqual((passwd.users(), len(passwd)), ([], 0))

    def test_load_reads_file_and_names_it_in_errors(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        with open(path, "w") as f:
            f.write(f"alice:{ALICE_MD5}\nbroken\n")
        error = self.assertRaises(PasswdError, PoolPasswd.load, path)
        self.assertIn(f"{path}:2:", str(error))

    def test_invalid_utf8_names_the_line(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        with open(path, "wb") as f:
            f.write(b"alice:x\nbob:caf\xe9\n")
        error = self.assertRaises(PasswdError, PoolPasswd.load, path)
        self.assertIn(f"{path}:2: not valid UTF-8", str(error))

    def test_unreadable_path_is_an_error(self) -> None:
        self.assertRaises(PasswdError, PoolPasswd.load, self.make_dir())


class WriteEntryTests(SynchronousTestCase, TempDirMixin):
    def path(self) -> str:
        return os.path.join(self.make_dir(), "pool_passwd")

    def read(self, path: str) -> str:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()

    def test_new_file_is_private(self) -> None:
        path = self.path()
        self.assertFalse(write_entry(path, "alice", "wonderland"))
        self.assertEqual(self.read(path), f"alice:{ALICE_MD5}\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_each_kind_round_trips(self) -> None:
        path = self.path()
        write_entry(path, "m", "pw-m", "md5")
        write_entry(path, "s", "pw-s", "scram")
        write_entry(path, "t", "pw-t", "text")
        passwd = PoolPasswd.load(path)
        kinds = [(u, e.kind) for u in passwd.users() for e in [passwd.lookup(u)] if e]
        self.assertEqual(kinds, [("m", KIND_MD5), ("s", KIND_SCRAM), ("t", KIND_TEXT)])
        scram = passwd.lookup("s")
        assert scram is not None and scram.scram_verifier is not None
        self.assertTrue(verify_plain_password(scram.scram_verifier, "pw-s"))
        self.assertIn("t:TEXTpw-t\n", self.read(path))

    def test_replace_keeps_other_lines_and_drops_duplicates(self) -> None:
        path = self.path()
        with open(path, "w") as f:
            f.write("# header\nalice:old\nbob:keep\nalice:older\n# footer")
        self.assertTrue(write_entry(path, "alice", "wonderland"))
        self.assertEqual(self.read(path), f"# header\nalice:{ALICE_MD5}\nbob:keep\n# footer")

    def test_append_after_a_last_line_without_newline(self) -> None:
        path = self.path()
        with open(path, "w") as f:
            f.write("bob:keep")
        write_entry(path, "alice", "wonderland", "text")
        self.assertEqual(self.read(path), "bob:keep\nalice:TEXTwonderland\n")

    def test_crlf_lines_are_kept(self) -> None:
        path = self.path()
        with open(path, "w", newline="") as f:
            f.write("bob:keep\r\nalice:old\r\n")
        write_entry(path, "alice", "wonderland", "text")
        self.assertEqual(self.read(path), "bob:keep\r\nalice:TEXTwonderland\n")

    def test_existing_mode_is_kept(self) -> None:
        path = self.path()
        with open(path, "w") as f:
            f.write("bob:keep\n")
        os.chmod(path, 0o640)
        write_entry(path, "alice", "wonderland")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)

    def test_symlink_is_followed(self) -> None:
        directory = self.make_dir()
        target = os.path.join(directory, "real")
        link = os.path.join(directory, "pool_passwd")
        with open(target, "w") as f:
            f.write("bob:keep\n")
        os.symlink(target, link)
        write_entry(link, "alice", "wonderland", "text")
        self.assertTrue(os.path.islink(link))
        self.assertEqual(self.read(target), "bob:keep\nalice:TEXTwonderland\n")

    def test_no_temporary_file_is_left(self) -> None:
        path = self.path()
        write_entry(path, "alice", "wonderland")
        self.assertEqual(os.listdir(os.path.dirname(path)), ["pool_passwd"])

    def test_bad_arguments_are_refused(self) -> None:
        path = self.path()
        for user, password, kind in [
            ("", "pw", "md5"),
            ("a:b", "pw", "md5"),
            ("a\nb", "pw", "md5"),
            ("#alice", "pw", "md5"),
            ("alice", "", "md5"),
            ("alice", "two\nlines", "md5"),
            ("alice", "pw", "aes"),
            ("alice", "pw", "plain"),
        ]:
            self.assertRaises(PasswdError, write_entry, path, user, password, kind)
        self.assertFalse(os.path.exists(path))

    def test_unwritable_directory_is_an_error(self) -> None:
        path = os.path.join(self.make_dir(), "missing-dir", "pool_passwd")
        self.assertRaises(PasswdError, write_entry, path, "alice", "pw")


class CommandTests(SynchronousTestCase, TempDirMixin):
    def run_command(
        self, argv: List[str], stdin: str = "", passwords: Tuple[str, ...] = ()
    ) -> Tuple[int, str, str]:
        answers = list(passwords)
        prompts: List[str] = []

        def fake_getpass(prompt: str) -> str:
            prompts.append(prompt)
            return answers.pop(0)

        out, err = io.StringIO(), io.StringIO()
        code = run_passwd_command(argv, io.StringIO(stdin), out, err, getpass=fake_getpass)
        self.assertEqual(answers, [])
        return code, out.getvalue(), err.getvalue()

    def test_password_stdin_writes_md5_by_default(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, out, err = self.run_command(
            ["alice", "--file", path, "--password-stdin"], stdin="wonderland\n"
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn('added md5 entry for user "alice"', out)
        self.assertNotIn("wonderland", out)
        entry = PoolPasswd.load(path).lookup("alice")
        self.assertEqual(entry, PasswdEntry("alice", KIND_MD5, ALICE_MD5))

    def test_scram_method(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, _, _ = self.run_command(
            ["bob", "--file", path, "--method", "scram-sha-256", "--password-stdin"],
            stdin="builder\r\n",
        )
        self.assertEqual(code, 0)
        entry = PoolPasswd.load(path).lookup("bob")
        assert entry is not None and entry.scram_verifier is not None
        self.assertTrue(verify_plain_password(entry.scram_verifier, "builder"))

    def test_text_method_and_replacement(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        self.run_command(["carol", "--file", path, "--password-stdin"], stdin="one\n")
        code, out, _ = self.run_command(
            ["carol", "--file", path, "--method", "text", "--password-stdin"], stdin="two\n"
        )
        self.assertEqual(code, 0)
        self.assertIn("replaced text entry", out)
        entry = PoolPasswd.load(path).lookup("carol")
        self.assertEqual(entry, PasswdEntry("carol", KIND_TEXT, "two"))

    def test_prompts_twice(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, _, _ = self.run_command(
            ["alice", "--file", path], passwords=("wonderland", "wonderland")
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            PoolPasswd.load(path).lookup("alice"), PasswdEntry("alice", KIND_MD5, ALICE_MD5)
        )

    def test_mismatched_prompts_fail(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, _, err = self.run_command(["alice", "--file", path], passwords=("one", "two"))
        self.assertEqual(code, 1)
        self.assertIn("do not match", err)
        self.assertFalse(os.path.exists(path))

    def test_empty_password_fails(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, _, err = self.run_command(["alice", "--file", path, "--password-stdin"], stdin="")
        self.assertEqual(code, 1)
        self.assertIn("password is empty", err)

    def test_default_file_is_in_current_directory(self) -> None:
        directory = self.make_dir()
        previous = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, previous)
        code, _, _ = self.run_command(["alice", "--password-stdin"], stdin="wonderland\n")
        self.assertEqual(code, 0)
        self.assertIsNotNone(
            PoolPasswd.load(os.path.join(directory, "pool_passwd")).lookup("alice")
        )

    def test_bad_method_is_a_usage_error(self) -> None:
        code, out, err = self.run_command(["alice", "--method", "aes"])
        self.assertEqual((code, out), (2, ""))
        self.assertIn("invalid choice", err)

    def test_missing_user_is_a_usage_error(self) -> None:
        code, _, err = self.run_command([])
        self.assertEqual(code, 2)
        self.assertIn("twisted-pgpool passwd", err)

    def test_help_goes_to_stdout(self) -> None:
        code, out, err = self.run_command(["--help"])
        self.assertEqual((code, err), (0, ""))
        self.assertIn("--password-stdin", out)

    def test_bad_user_name_fails(self) -> None:
        path = os.path.join(self.make_dir(), "pool_passwd")
        code, _, err = self.run_command(["a:b", "--file", path, "--password-stdin"], stdin="x\n")
        self.assertEqual(code, 1)
        self.assertIn("cannot contain ':'", err)

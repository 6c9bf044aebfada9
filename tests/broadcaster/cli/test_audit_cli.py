"""``broadcaster audit``: the exact flags, and a clear error (exit 2) when it cannot run."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from broadcaster.cli.audit import read_keys_file, run_audit
from broadcaster.cli.main import build_parser
from broadcaster.settings import render_config

DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def config(tmp_path: Path) -> Path:
    text = render_config(
        chain_id=31337,
        clients=[("a", "ws://127.0.0.1:1")],
        rpcs=[("a", "http://127.0.0.1:1")],
        signer_url="unix:///tmp/none.sock",
        accounts=[DEV],
        api_listen="127.0.0.1:8650",
        tokens=["t"],
        metrics_listen="127.0.0.1:9650",
        journal_path=tmp_path / "j.db",
    )
    path = tmp_path / "b.toml"
    path.write_text(text)
    return path


def test_the_command_line_of_design_section_7_parses() -> None:
    args = build_parser().parse_args(
        ["audit", "--config", "c.toml", "--from-block", "5", "--to-block", "9", "--json"]
    )
    assert (args.config, args.from_block, args.to_block, args.json) == ("c.toml", 5, 9, True)
    args = build_parser().parse_args(["audit", "--config", "c.toml", "--from-block", "0"])
    assert args.to_block is None and args.json is False


def test_no_journal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["audit", "--config", str(config(tmp_path)), "--from-block", "0"]
    )
    assert run_audit(args, io.StringIO()) == 2
    assert f"no journal at {tmp_path / 'j.db'}" in capsys.readouterr().err


def test_a_backwards_range_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.db").touch()
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "9", "--to-block", "3"]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert "--from-block" in capsys.readouterr().err


def test_no_rpc_answering_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.db").touch()
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "0", "--to-block", "1"]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert "no endpoint answered" in capsys.readouterr().err


def _copy_signed_by(path: Path, core: Any) -> None:
    """A journal at ``path`` holding ``core``'s log, stored by the real streamer (which trusts,
    and writes into ``audit_keys``, the key ``core`` signs with)."""
    from broadcaster.audit.stream import AuditStreamer
    from nonce.audit_copy import AuditCopy
    from tests.broadcaster.audit.test_stream import CoreSource
    from tests.broadcaster.audit.test_verify import key_of

    async def main() -> None:
        streamer = AuditStreamer(AuditCopy(path), CoreSource(core), on_refused=lambda r: None)
        streamer.trust(key_of(core), attested=True)
        assert await streamer.sync()
        streamer.copy.close()

    asyncio.run(main())


def test_keys_pins_the_log_keys_and_a_copy_re_signed_by_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack: the parent owns the journal file. It replaces the copy with a log it signed
    itself and stores its own key as attested: checked against the stored keys, that copy
    verifies. With ``--keys`` (the enclave's attested log key, pinned offline) it is refused,
    exit 2, naming the reason and the key that signed it; the genuine copy verifies against
    the same pin."""
    from broadcaster.cli.audit import verify_copy
    from nonce.audit_copy import AuditCopy
    from tests.broadcaster.audit.test_verify import enclave, key_of, sign

    genuine, forged = enclave(), enclave()
    for core in (genuine, forged):
        for n in range(2):
            sign(core, n)
    pin = tmp_path / "log-keys.txt"
    pin.write_text(f"# the enclave's attested log key\n{key_of(genuine)}\n")
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    real_dir.mkdir()
    fake_dir.mkdir()
    _copy_signed_by(real_dir / "j.db", genuine)
    _copy_signed_by(fake_dir / "j.db", forged)

    pinned = read_keys_file(pin)
    assert pinned == {key_of(genuine).lower()}
    for where in (real_dir, fake_dir):
        copy = AuditCopy(where / "j.db")
        assert verify_copy(copy) == 3  # each passes against the keys stored beside it
        copy.close()
    copy = AuditCopy(real_dir / "j.db")
    assert verify_copy(copy, pinned) == 3  # the genuine one against the pin
    copy.close()

    argv = ["audit", "--config", str(config(fake_dir)), "--from-block", "0", "--keys", str(pin)]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and "untrusted_key" in err
    assert "signed by a log key --keys does not list" in err
    assert key_of(forged).lower()[:18] in err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no keys in it"),
        ("# only a comment\n", "no keys in it"),
        ("04abcd\n", "line 1: not a 0x-hex public key"),
        ("0x" + "zz" * 65 + "\n", "line 1: not a 0x-hex public key"),
        ("\n0x" + "04" * 20 + "\n", "line 2: a secp256k1 public key is 33 or 65 bytes, got 20"),
    ],
)
def test_a_bad_keys_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    (tmp_path / "j.db").touch()
    pin = tmp_path / "keys.txt"
    pin.write_text(text)
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "0", "--keys", str(pin)]
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert says in capsys.readouterr().err


def test_a_missing_keys_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.db").touch()
    argv = ["audit", "--config", str(config(tmp_path)), "--from-block", "0", "--keys",
            str(tmp_path / "absent.txt")]  # fmt: skip
    assert run_audit(build_parser().parse_args(argv), io.StringIO()) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_a_pinned_key_in_its_compressed_spelling_pins_the_same_key(tmp_path: Path) -> None:
    """``--keys`` takes 33- or 65-byte keys; the log names keys uncompressed. The compressed
    spelling of the genuine key must pin it (not refuse the genuine copy as untrusted), and a
    65-byte string that is no curve point is a clear error, not a pin that matches nothing."""
    import coincurve

    from broadcaster.cli.audit import KeysFileError, verify_copy
    from nonce.audit_copy import AuditCopy
    from tests.broadcaster.audit.test_verify import enclave, key_of, sign

    genuine = enclave()
    sign(genuine, 0)
    _copy_signed_by(tmp_path / "j.db", genuine)
    full = key_of(genuine)
    short = coincurve.PublicKey(bytes.fromhex(full[2:])).format(compressed=True).hex()
    pin = tmp_path / "keys.txt"
    pin.write_text(f"0X{short.upper()}\n")
    pinned = read_keys_file(pin)
    assert pinned == {full.lower()}
    copy = AuditCopy(tmp_path / "j.db")
    assert verify_copy(copy, pinned) == 2
    copy.close()
    pin.write_text("0x04" + "00" * 64 + "\n")
    with pytest.raises(KeysFileError, match="line 1: not a secp256k1 public key"):
        read_keys_file(pin)

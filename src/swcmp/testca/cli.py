"""``swcmp testca``: the test CA's commands (``serve``, ``init``).

:data:`testca` is a click group meant to be mounted on swcmp's CLI
(``cli.add_command(testca)``); :func:`main` runs it on its own
(``python -m swcmp.testca``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from swcmp.cmp import keys
from swcmp.errors import FAILURE_BIT, SwcmpError
from swcmp.testca.config import FAULTS, TEMPLATE_KEY_TYPES, CAConfig, parse_duration

#: CMP over TCP has port 829 (RFC 4210); 8829 needs no root and is easy to remember.
DEFAULT_PORT = 8829

_DIR = click.option("--dir", "directory", required=True,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="Directory of the CA: ca.key, ca.crt, state.json, issued/.")
_KEY_TYPE = click.option("--key-type", type=click.Choice(keys.KEY_TYPES), default="ecdsa:p256",
                         show_default=True,
                         help="Type of the CA key when it is created (first run only). "
                         "OpenSSL 3.0 cannot verify Ed25519 message protection.")


def _setup_logging(verbose: bool) -> None:
    # A CA logs every request by default. Mounted under swcmp's CLI, its handler on the
    # "swcmp" logger prints our records; only our level is raised, the rest of swcmp stays
    # as quiet as the global -v says. Run on its own, we bring a handler.
    if not logging.getLogger().handlers and not logging.getLogger("swcmp").handlers:
        logging.basicConfig(stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("swcmp.testca").setLevel(logging.DEBUG if verbose else logging.INFO)


def _failinfos(_ctx: click.Context, _param: click.Parameter,
               values: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    for n in names:
        if n not in FAILURE_BIT:
            known = ", ".join(sorted(FAILURE_BIT, key=FAILURE_BIT.__getitem__))
            raise click.BadParameter(f"unknown failInfo {n!r}; known: {known}")
    return names


@click.group(name="testca")
def testca() -> None:
    """The embedded CMP test CA: a small, strict CA for the demo and the tests."""


@testca.command()
@_DIR
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port (0: any free port; the one chosen is printed).")
@click.option("--mac-ref", help="Reference value (senderKID) for MAC-protected requests.")
@click.option("--mac-secret-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding the shared secret for MAC protection (keep it 0600).")
@click.option("--validity", default="1h", show_default=True,
              help="Lifetime of issued certificates: 90s, 30m, 1h, 7d...")
@_KEY_TYPE
@click.option("--implicit-confirm/--no-implicit-confirm", default=True, show_default=True,
              help="Grant implicitConfirm to requests that ask for it.")
@click.option("--poll", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test knob: answer 'waiting', deliver on the N-th pollReq.")
@click.option("--check-after", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seconds of checkAfter in pollRep.")
@click.option("--reject", multiple=True, callback=_failinfos, metavar="FAILINFO",
              help="Test knob: refuse every certificate request with this failInfo "
              "(e.g. badPOP; repeat or comma-separate for several).")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Test knob: seconds to wait before answering any request.")
@click.option("--fault", type=click.Choice(FAULTS),
              help="Test knob: a fault in every successful answer, which a client must refuse.")
@click.option("--signer-in-extracerts/--no-signer-in-extracerts", default=True,
              show_default=True,
              help="Send the CA certificate in the extraCerts of signed answers; without it "
                   "clients must find the signer among their trust anchors.")
@click.option("--unique-keys/--no-unique-keys", default=True, show_default=True,
              help="Refuse a public key certified before for another subject or in a "
                   "certificate never confirmed, as EJBCA does by default.")
@click.option("--label-paths", is_flag=True,
              help="Route by RFC 9483 operation labels: a request only at a path ending in "
                   "its label (.../initialization, .../keyupdate, .../getcacerts), a certConf "
                   "or pollReq only where its transaction began; HTTP 404 otherwise.")
@click.option("--template-key-type", "template_key_types", multiple=True,
              type=click.Choice(TEMPLATE_KEY_TYPES), metavar="TYPE",
              help="A key type the certificate request template (genm certReqTemplate) "
              "allows: rsa:2048|3072|4096, ecdsa:p256, ecdsa:p384, ecdsa (any curve), "
              "ed25519. Repeat for several.")
@click.option("--template-subject", metavar="DN",
              help="The subject of the certificate request template: requests must carry "
              "its attributes as given.")
@click.option("--template-unknown", is_flag=True,
              help="Test knob: answer genm certReqTemplate with an error, as a CA that does "
              "not know it (without any --template-* option the CA answers it has no "
              "template).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def serve(directory: Path, host: str, port: int, mac_ref: str | None,
          mac_secret_file: Path | None, validity: str, key_type: str, implicit_confirm: bool,
          poll: int, check_after: int, reject: tuple[str, ...], delay: float, fault: str | None,
          signer_in_extracerts: bool, unique_keys: bool, label_paths: bool,
          template_key_types: tuple[str, ...], template_subject: str | None,
          template_unknown: bool, verbose: bool) -> None:
    """Serve CMP until stopped (Ctrl-C or SIGTERM); create the CA in DIR on the first run."""
    from swcmp.testca.server import TestCA

    _setup_logging(verbose)
    try:
        secret = None
        if mac_secret_file is not None:
            secret = mac_secret_file.read_bytes().rstrip(b"\r\n")
        config = CAConfig(
            mac_ref=mac_ref.encode() if mac_ref is not None else None, mac_secret=secret,
            validity=parse_duration(validity), key_type=key_type,
            implicit_confirm=implicit_confirm, poll=poll, check_after=check_after,
            reject=reject, delay=delay, fault=fault,
            signer_in_extra_certs=signer_in_extracerts, unique_public_keys=unique_keys,
            label_paths=label_paths,
            template_key_types=template_key_types, template_subject=template_subject,
            template_unknown=template_unknown)
        ca = TestCA(directory, config=config, host=host, port=port).start()
    except (SwcmpError, OSError) as e:
        raise click.ClickException(str(e)) from e

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        click.echo(f"CA certificate: {ca.ca_cert_path} ('{ca.ca_cert.subject.rfc4514_string()}')")
        if config.mac_ref is not None:
            click.echo(f"MAC reference: {mac_ref} (secret from {mac_secret_file})")
        # Tests and scripts parse this line to find the port: print it last, flushed.
        click.echo(f"listening on {ca.url}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        ca.stop()
        click.echo("stopped")


@testca.command()
@_DIR
@_KEY_TYPE
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def init(directory: Path, key_type: str, verbose: bool) -> None:
    """Create the CA key and certificate in DIR (or show the existing ones)."""
    from swcmp.fsutil import ensure_dir, exclusive_lock
    from swcmp.testca.authority import CA_CERT_FILE, Authority

    _setup_logging(verbose)
    try:
        ensure_dir(directory, mode=0o700)
        with exclusive_lock(directory, "testca", blocking=False,
                            what=f"test CA directory {directory}"):
            authority = Authority.load_or_create(directory, key_type=key_type,
                                                 now=datetime.now(UTC))
    except SwcmpError as e:
        raise click.ClickException(str(e)) from e
    cert = authority.cert
    click.echo(f"CA certificate: {directory / CA_CERT_FILE}")
    click.echo(f"subject: {cert.subject.rfc4514_string()}")
    click.echo(f"key: {keys.key_type_of(authority.key)}, valid until "
               f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")


@testca.command()
@_DIR
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def rollover(directory: Path, verbose: bool) -> None:
    """Give the CA in DIR a new root key (RFC 4210 4.4 root CA key update).

    Makes newWithNew (the new root, now ca.crt), newWithOld and oldWithNew (in
    rollover/) and keeps the old root as old-ca.crt. A CA serving DIR picks it up
    at its next request: it issues with the new key, answers genm rootCaCert with
    the three certificates, and still takes and revokes what the old root issued.
    """
    from swcmp.fsutil import exclusive_lock
    from swcmp.testca.authority import NEW_WITH_OLD_FILE, OLD_CERT_FILE, ROLLOVER_DIR, roll_over

    _setup_logging(verbose)
    try:
        # Its own lock: a serving CA holds the directory's, and follows the rollover.
        with exclusive_lock(directory, "testca-rollover", blocking=False,
                            what=f"rollover of test CA {directory}"):
            if not (directory / "ca.crt").exists():
                raise click.ClickException(f"no test CA in {directory}: run `swcmp testca "
                                           "init --dir` first")
            authority = roll_over(directory, now=datetime.now(UTC))
    except SwcmpError as e:
        raise click.ClickException(str(e)) from e
    assert authority.previous is not None
    click.echo(f"new root: {directory / 'ca.crt'} ({keys.key_type_of(authority.key)}, valid "
               f"until {authority.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z)")
    click.echo(f"old root: {directory / OLD_CERT_FILE} (valid until "
               f"{authority.previous.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z)")
    click.echo(f"newWithOld: {directory / ROLLOVER_DIR / NEW_WITH_OLD_FILE}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``testca`` group as a program; return the exit status."""
    try:
        result = testca.main(args=list(argv) if argv is not None else None,
                             prog_name="swcmp testca", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


__all__ = ["DEFAULT_PORT", "main", "testca"]

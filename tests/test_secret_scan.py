"""The session-wide secret scan (tests/support/secrets.py) catches what it must."""

from __future__ import annotations

import logging

from tests.support.secrets import FAKE_SECRETS, SecretScanner


def test_scanner_catches_secrets_in_messages_arguments_and_exceptions() -> None:
    scanner = SecretScanner()
    logger = logging.getLogger("oyez.scan-test")
    logger.addHandler(scanner)
    logger.propagate = False  # the session's own scanner must not see these planted secrets
    logger.setLevel(logging.DEBUG)
    secret = next(iter(sorted(FAKE_SECRETS)))
    try:
        logger.debug("plain line")
        logger.debug("key=%s", secret)
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(scanner)
        logger.propagate = True
    assert scanner.seen == 3
    assert len(scanner.leaks) == 2
    assert all(secret not in leak and "<SECRET>" in leak for leak in scanner.leaks)

"""A fake Amazon Polly REST API, version 2016-06-10 (``https://polly.<region>.amazonaws.com``).

The API is botocore's own service model (``botocore/data/polly/2016-06-10/service-2.json``, read
at import through ``botocore.loaders.Loader``, the description the AWS SDKs are generated from):
the paths, every member, enum, required field, list and pattern constraint, and each error's
``httpStatusCode`` below come from it, so the fake follows the installed botocore exactly.

- ``POST /v1/speech`` (SynthesizeSpeech): a JSON body; ``OutputFormat`` (json | mp3 | ogg_opus |
  ogg_vorbis | pcm | mulaw | alaw), ``Text`` and ``VoiceId`` required; ``Engine`` (standard, the
  default | neural | long-form | generative), ``LanguageCode`` (a bilingual voice's other
  language), ``LexiconNames`` (at most 5, each ``[0-9A-Za-z]{1,20}``), ``SampleRate`` (a string),
  ``SpeechMarkTypes`` (at most 4) and ``TextType`` (text, the default | ssml). → 200, the audio
  as the body, ``Content-Type`` audio/mpeg (mp3), audio/ogg (ogg_vorbis, ogg_opus), audio/pcm,
  audio/mulaw, audio/alaw, and ``x-amzn-RequestCharacters``: the characters synthesized (SSML
  tags are not counted). ``SampleRate``: mp3 and ogg_vorbis "8000", "16000", "22050", "24000",
  "44100", "48000" (default "22050" for the standard engine, "24000" for the others); pcm "8000"
  or "16000" (default), signed 16-bit mono little-endian; ogg_opus "48000"; mulaw, alaw "8000".
  ``Text``: at most 6000 characters in all, of which at most 3000 billed (the model's
  TextLengthExceededException).
- ``GET /v1/voices`` (DescribeVoices): query ``Engine``, ``LanguageCode``,
  ``IncludeAdditionalLanguageCodes`` (a bilingual voice is listed under its other language too)
  and ``NextToken`` → ``{"Voices": [{"Gender", "Id", "LanguageCode", "LanguageName", "Name",
  "Origin", "SupportedEngines", "AdditionalLanguageCodes"?}], "NextToken"?}``, ``page_size``
  voices a page; a token the fake did not issue (for the same filters) → InvalidNextTokenException.

Errors, rest-json: the status (the model's ``httpStatusCode``), ``x-amzn-ErrorType: <Code>``,
``x-amzn-RequestId``, a JSON body ``{"message": ...}`` (``"Message"`` for AccessDeniedException,
whose model member is spelt so), see :func:`polly_error`. A body that is not a JSON object, or a
member of the wrong JSON type → SerializationException; the model's constraints → one
ValidationException in AWS's wording ("2 validation errors detected: Value null at 'text' failed
to satisfy constraint: Member must not be null; ..."); then InvalidSsmlException (SSML that is not
one well-formed ``<speak>`` element), TextLengthExceededException, EngineNotSupportedException,
LanguageNotSupportedException, LexiconNotFoundException (no lexicon is stored unless a test adds
its name to ``lexicons``), MarksNotSupportedForFormatException,
SsmlMarksNotSupportedForTextTypeException, InvalidSampleRateException. Throttling (AWS's common
errors): 400 ``ThrottlingException`` "Rate exceeded", past ``rate_limit_per_second``
SynthesizeSpeech calls in a sliding second (DescribeVoices is not limited).

Authentication is AWS Signature Version 4 (AWS General Reference, "Signature Version 4 signing
process"; IAM User Guide, "Troubleshoot signed requests"), verified for real: the canonical
request is rebuilt from what arrived (method; the path, normalised and URI-encoded again; the
query, decoded, re-encoded and sorted; the signed headers with their received values, trimmed;
the SHA-256 of the received body) and signed with the secret key. ``Authorization:
AWS4-HMAC-SHA256 Credential=<AKID>/<yyyymmdd>/<region>/polly/aws4_request, SignedHeaders=...,
Signature=...`` and ``X-Amz-Date`` are required, ``host`` must be signed, and with temporary
credentials (``session_token``) ``X-Amz-Security-Token`` too. No Authorization → 403
MissingAuthenticationTokenException; a malformed one → 400 IncompleteSignatureException; another
access key or token → 403 UnrecognizedClientException; a wrong signature, scope (region, service,
date, terminator) or an ``X-Amz-Date`` over 5 minutes from the wall clock → 403
InvalidSignatureException; a mismatch's message carries the canonical request and string to sign
the fake computed, as AWS's does. The request log redacts the Signature and the token.

Billing is per character synthesized (``characters_billed``, one :class:`BilledCall` per success
named ``<VoiceId>/<engine>`` with the text as sent). Not simulated: speech marks (OutputFormat
json: a 400 saying so), lexicon contents, custom voices, presigned (query-string) SigV4, the
``Date`` header in place of ``X-Amz-Date``, SSML semantics (tags are stripped for the spoken
text). Wording the model and AWS's pages do not give (serialization, sample-rate, lexicon,
language and next-token messages) is the fake's own.

Over 450 lines: the model's constraints, the SigV4 verification and every documented error of the
two operations, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from aiohttp import web
from botocore.loaders import Loader
from botocore.utils import normalize_url_path

from tests.fakes.audio import (
    Synthesizer,
    encode_pcm,
    encode_with_ffmpeg,
    find_ffmpeg,
    resample,
    run_synthesizer,
)
from tests.fakes.base import (
    REDACTED,
    BilledCall,
    Clock,
    FakeServer,
    LoggedRequest,
    RateLimiter,
    ScriptedResponse,
)

__all__ = [
    "ACCESS_DENIED_MESSAGE",
    "ALGORITHM",
    "CONTENT_TYPES",
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_ACCESS_KEY",
    "ENGINES",
    "ERROR_STATUS",
    "INVALID_SSML_MESSAGE",
    "LANGUAGE_CODES",
    "MAX_BILLED_CHARACTERS",
    "MAX_SIGNATURE_SKEW_S",
    "MAX_TOTAL_CHARACTERS",
    "MISSING_TOKEN_MESSAGE",
    "OUTPUT_FORMATS",
    "SAMPLE_RATES",
    "SERVICE",
    "SERVICE_FAILURE_MESSAGE",
    "SIGNATURE_MISMATCH_MESSAGE",
    "SYNTHESIZE_PATH",
    "TEXT_LENGTH_MESSAGE",
    "TEXT_TYPES",
    "THROTTLING_MESSAGE",
    "UNRECOGNIZED_CLIENT_MESSAGE",
    "VOICES",
    "VOICES_PATH",
    "VOICE_IDS",
    "WRONG_REGION_MESSAGE",
    "WRONG_SERVICE_MESSAGE",
    "FakePolly",
    "PollyVoice",
    "SynthesisRequest",
    "canonical_request",
    "default_sample_rate",
    "encode_polly",
    "error_body",
    "ffmpeg_has_encoder",
    "parse_synthesize_request",
    "polly_error",
    "signing_key",
    "ssml_text",
    "string_to_sign",
]

# -- the service model ----------------------------------------------------------------------------
_MODEL: dict[str, Any] = Loader().load_service_model("polly", "service-2")
_SHAPES: dict[str, Any] = _MODEL["shapes"]


def _enum(shape: str) -> tuple[str, ...]:
    return tuple(_SHAPES[shape]["enum"])


OUTPUT_FORMATS = _enum("OutputFormat")
ENGINES = _enum("Engine")
TEXT_TYPES = _enum("TextType")
VOICE_IDS = _enum("VoiceId")
LANGUAGE_CODES = _enum("LanguageCode")
SYNTHESIZE_PATH: str = _MODEL["operations"]["SynthesizeSpeech"]["http"]["requestUri"]
VOICES_PATH: str = _MODEL["operations"]["DescribeVoices"]["http"]["requestUri"]
SERVICE: str = _MODEL["metadata"]["endpointPrefix"]  # "polly", also the signing name

#: Each error's status: the model's exceptions, then the ones AWS's front end answers itself.
ERROR_STATUS: dict[str, int] = {
    name: shape["error"]["httpStatusCode"]
    for name, shape in _SHAPES.items()
    if shape.get("exception")
} | {
    "SerializationException": 400,
    "IncompleteSignatureException": 400,  # common errors: IncompleteSignature, 400
    "MissingAuthenticationTokenException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
}
_MESSAGE_MEMBER = {
    name: "Message" if "Message" in shape["members"] else "message"
    for name, shape in _SHAPES.items()
    if shape.get("exception")
}

# -- constants ------------------------------------------------------------------------------------
DEFAULT_ACCESS_KEY_ID = "AKIDTESTPOLLY0000000"
DEFAULT_SECRET_ACCESS_KEY = "test-polly-secret-key-0123456789abcdef"
DEFAULT_REGION = "eu-west-1"
DEFAULT_RATE_LIMIT = 80  # SynthesizeSpeech transactions per second (Polly's quotas)
DEFAULT_PAGE_SIZE = 4
ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
MAX_SIGNATURE_SKEW_S = 300.0  # "Signature expired: ... (... - 5 min.)"
MAX_TOTAL_CHARACTERS = 6000
MAX_BILLED_CHARACTERS = 3000
ACCOUNT = "123456789012"

_MP3_RATES = ("8000", "16000", "22050", "24000", "44100", "48000")
SAMPLE_RATES: dict[str, tuple[str, ...]] = {
    "mp3": _MP3_RATES,
    "ogg_vorbis": _MP3_RATES,
    "pcm": ("8000", "16000"),
    "ogg_opus": ("48000",),
    "mulaw": ("8000",),
    "alaw": ("8000",),
}
CONTENT_TYPES: dict[str, str] = {
    "json": "application/x-json-stream",
    "mp3": "audio/mpeg",
    "ogg_opus": "audio/ogg",
    "ogg_vorbis": "audio/ogg",
    "pcm": "audio/pcm",
    "mulaw": "audio/mulaw",
    "alaw": "audio/alaw",
}

MISSING_TOKEN_MESSAGE = "Missing Authentication Token"
UNRECOGNIZED_CLIENT_MESSAGE = "The security token included in the request is invalid."
SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
WRONG_REGION_MESSAGE = "Credential should be scoped to a valid region."
WRONG_SERVICE_MESSAGE = f"Credential should be scoped to correct service: '{SERVICE}'."
HOST_NOT_SIGNED_MESSAGE = (
    "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
)
TEXT_LENGTH_MESSAGE = "Maximum text length has been exceeded"
THROTTLING_MESSAGE = "Rate exceeded"
INVALID_SSML_MESSAGE = "Invalid SSML request"
ACCESS_DENIED_MESSAGE = (
    f"User: arn:aws:iam::{ACCOUNT}:user/oyez is not authorized to perform: polly:SynthesizeSpeech"
)
SERVICE_FAILURE_MESSAGE = "An unknown condition has caused a service failure."  # the model's
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_PARAMETER = re.compile(r"([A-Za-z]+)=([^,\s]*)")
_SIGNATURE = re.compile(r"Signature=[^,\s]*")


@dataclass(frozen=True)
class PollyVoice:
    """One entry of DescribeVoices (a voice Amazon Polly provides: ``Origin`` "aws")."""

    id: str
    name: str
    gender: str
    language_code: str
    language_name: str
    engines: tuple[str, ...]
    additional_language_codes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        voice: dict[str, Any] = {
            "Gender": self.gender,
            "Id": self.id,
            "LanguageCode": self.language_code,
            "LanguageName": self.language_name,
            "Name": self.name,
            "Origin": "aws",
            "SupportedEngines": list(self.engines),
        }
        if self.additional_language_codes:
            voice["AdditionalLanguageCodes"] = list(self.additional_language_codes)
        return voice

    def speaks(self, language_code: str) -> bool:
        return language_code in (self.language_code, *self.additional_language_codes)


# Engines as AWS's "Available voices" table lists them (docs.aws.amazon.com/polly/latest/dg/
# available-voices.html): Amy and Brian are generative too, Aditi is standard only.
VOICES: tuple[PollyVoice, ...] = (
    PollyVoice(
        "Joanna", "Joanna", "Female", "en-US", "US English", ("generative", "neural", "standard")
    ),
    PollyVoice(
        "Matthew", "Matthew", "Male", "en-US", "US English", ("generative", "neural", "standard")
    ),
    PollyVoice(
        "Danielle",
        "Danielle",
        "Female",
        "en-US",
        "US English",
        ("generative", "long-form", "neural"),
    ),
    PollyVoice("Kevin", "Kevin", "Male", "en-US", "US English", ("neural",)),
    PollyVoice(
        "Amy", "Amy", "Female", "en-GB", "British English", ("generative", "neural", "standard")
    ),
    PollyVoice(
        "Brian", "Brian", "Male", "en-GB", "British English", ("generative", "neural", "standard")
    ),
    PollyVoice("Vicki", "Vicki", "Female", "de-DE", "German", ("neural", "standard")),
    PollyVoice("Lea", "Léa", "Female", "fr-FR", "French", ("neural", "standard")),
    PollyVoice("Aditi", "Aditi", "Female", "en-IN", "Indian English", ("standard",), ("hi-IN",)),
)
_BY_ID = {voice.id: voice for voice in VOICES}


# -- errors ---------------------------------------------------------------------------------------
def error_body(code: str, message: str) -> dict[str, str]:
    """A rest-json error body: ``{"message": ...}`` (``"Message"`` where the model spells it so)."""
    return {_MESSAGE_MEMBER.get(code, "message"): message}


def _error_headers(code: str) -> dict[str, str]:
    return {"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())}


def polly_error(status: int, code: str, message: str) -> web.Response:
    """An error as Polly sends it: ``status``, ``x-amzn-ErrorType``, ``x-amzn-RequestId``, JSON."""
    return web.json_response(error_body(code, message), status=status, headers=_error_headers(code))


def _error(code: str, message: str) -> web.Response:
    return polly_error(ERROR_STATUS[code], code, message)


def _validation_error(problems: Sequence[str]) -> web.Response:
    count = len(problems)
    plural = "s" if count > 1 else ""
    message = f"{count} validation error{plural} detected: " + "; ".join(problems)
    return _error("ValidationException", message)


# -- the model's constraints ----------------------------------------------------------------------
def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _constraints(shape: Mapping[str, Any], value: Any) -> list[str]:
    """What ``value`` fails of ``shape``'s constraints, in Coral's words (no "Value ... at")."""
    failed: list[str] = []
    if shape["type"] == "list":
        if "max" in shape and len(value) > shape["max"]:
            failed.append(f"Member must have length less than or equal to {shape['max']}")
        if "min" in shape and len(value) < shape["min"]:
            failed.append(f"Member must have length greater than or equal to {shape['min']}")
        inner = _SHAPES[shape["member"]["shape"]]
        for problem in dict.fromkeys(p for item in value for p in _constraints(inner, item)):
            failed.append(f"Member must satisfy constraint: [{problem}]")
    elif shape["type"] == "string":
        if "enum" in shape and value not in shape["enum"]:
            failed.append(f"Member must satisfy enum value set: [{', '.join(shape['enum'])}]")
        if "pattern" in shape and re.fullmatch(shape["pattern"], value) is None:
            failed.append(f"Member must satisfy regular expression pattern: {shape['pattern']}")
        if "max" in shape and len(value) > shape["max"]:
            failed.append(f"Member must have length less than or equal to {shape['max']}")
        if "min" in shape and len(value) < shape["min"]:
            failed.append(f"Member must have length greater than or equal to {shape['min']}")
    return failed


def _validate(input_shape: str, fields: Mapping[str, Any]) -> list[str]:
    """Every constraint of the model's ``input_shape`` that ``fields`` (by member name) fails."""
    shape = _SHAPES[input_shape]
    problems: list[str] = []
    for name, member in shape["members"].items():
        where = name[:1].lower() + name[1:]
        value = fields.get(name)
        if value is None:
            if name in shape.get("required", ()):
                problems.append(
                    f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
                )
            continue
        for failed in _constraints(_SHAPES[member["shape"]], value):
            problems.append(
                f"Value '{_shown(value)}' at '{where}' failed to satisfy constraint: {failed}"
            )
    return problems


_JSON_TYPES = {"string": str, "boolean": bool, "integer": int}


def _deserialize(shape_name: str, body: Any) -> dict[str, Any] | str:
    """A structure's members (JSON nulls dropped, unknown names ignored); or why it cannot be."""
    if not isinstance(body, dict):
        return "Start of structure or map found where not expected: the body must be a JSON object."
    fields: dict[str, Any] = {}
    for name, member in _SHAPES[shape_name]["members"].items():
        value = body.get(name)
        if value is None:
            continue
        shape = _SHAPES[member["shape"]]
        kind = shape["type"]
        if kind == "list":
            item_kind = _JSON_TYPES.get(_SHAPES[shape["member"]["shape"]]["type"], object)
            good = isinstance(value, list) and all(isinstance(i, item_kind) for i in value)
        else:
            good = isinstance(value, _JSON_TYPES.get(kind, object)) and not (
                isinstance(value, bool) and kind != "boolean"
            )
        if not good:
            return f"Cannot deserialize member '{name}': expected a JSON {kind}, got {value!r}."
        fields[name] = value
    return fields


@dataclass(frozen=True)
class SynthesisRequest:
    """A SynthesizeSpeech body that passed deserialization and the model's constraints."""

    output_format: str
    text: str
    voice_id: str
    engine: str = "standard"
    language_code: str | None = None
    lexicon_names: tuple[str, ...] = ()
    sample_rate: str | None = None
    speech_mark_types: tuple[str, ...] = ()
    text_type: str = "text"


def parse_synthesize_request(body: bytes) -> SynthesisRequest | web.Response:
    """Deserialize and validate a SynthesizeSpeech body; the 400 response when it fails."""
    try:
        raw: Any = json.loads(body)
    except ValueError:
        return _error("SerializationException", "The request body is not valid JSON.")
    fields = _deserialize("SynthesizeSpeechInput", raw)
    if isinstance(fields, str):
        return _error("SerializationException", fields)
    problems = _validate("SynthesizeSpeechInput", fields)
    if problems:
        return _validation_error(problems)
    return SynthesisRequest(
        output_format=fields["OutputFormat"],
        text=fields["Text"],
        voice_id=fields["VoiceId"],
        engine=fields.get("Engine", "standard"),
        language_code=fields.get("LanguageCode"),
        lexicon_names=tuple(fields.get("LexiconNames", ())),
        sample_rate=fields.get("SampleRate"),
        speech_mark_types=tuple(fields.get("SpeechMarkTypes", ())),
        text_type=fields.get("TextType", "text"),
    )


def default_sample_rate(output_format: str, engine: str) -> str:
    """The model's defaults: mp3/ogg_vorbis 22050 (standard) or 24000, pcm 16000, the rest one."""
    if output_format in ("mp3", "ogg_vorbis"):
        return "22050" if engine == "standard" else "24000"
    if output_format == "pcm":
        return "16000"
    return SAMPLE_RATES[output_format][0]


class _Ssml(HTMLParser):
    """One ``<speak>`` element with balanced tags (``amazon:`` prefixes need no declaration)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.text: list[str] = []
        self.roots = 0
        self.valid = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        if not self.open:
            self.roots += 1
            self.valid &= tag == "speak" and self.roots == 1
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.valid = False

    def handle_data(self, data: str) -> None:
        if self.open:
            self.text.append(data)
        elif data.strip():
            self.valid = False


def ssml_text(ssml: str) -> str | None:
    """The text of an SSML document without its tags, entities decoded; None when invalid."""
    parser = _Ssml()
    parser.feed(ssml)
    parser.close()
    if not parser.valid or parser.open or parser.roots != 1:
        return None
    return "".join(parser.text)


# -- Signature Version 4 --------------------------------------------------------------------------
def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signing_key(secret_access_key: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = _hmac(f"AWS4{secret_access_key}".encode(), date)
    for part in (region, service, TERMINATOR):
        key = _hmac(key, part)
    return key


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for pair in raw_query.split("&") if raw_query else ():
        name, _, value = pair.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The SigV4 canonical request of what arrived. ``raw_path``: the path and query as sent;
    ``headers``: every value received, by lower-case name."""
    path, _, query = raw_path.partition("?")
    lines = [method.upper(), quote(normalize_url_path(path), safe="/~"), _canonical_query(query)]
    for name in signed_headers:
        values = headers.get(name, ())
        lines.append(f"{name}:" + ",".join(" ".join(value.split()) for value in values))
    lines += ["", ";".join(signed_headers), hashlib.sha256(body).hexdigest()]
    return "\n".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return "\n".join((ALGORITHM, amz_date, scope, digest))


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def _parse_authorization(value: str, amz_date: str | None) -> _Authorization | str:
    """The Authorization header's parts; or the IncompleteSignatureException message."""
    scheme, _, rest = value.strip().partition(" ")
    parameters = dict(_AUTH_PARAMETER.findall(rest))
    missing = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not parameters.get(name)
    ]
    if amz_date is None:
        missing.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if missing:
        return " ".join(missing)
    if scheme != ALGORITHM:
        return f"Unsupported AWS 'algorithm': '{scheme}'."
    credential = parameters["Credential"].split("/")
    if len(credential) != 5:
        return (
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            f"keyid/date/region/service/term, got '{parameters['Credential']}'"
        )
    signed = tuple(parameters["SignedHeaders"].split(";"))
    if "host" not in signed:
        return HOST_NOT_SIGNED_MESSAGE
    access_key_id, date, region, service, terminator = credential
    return _Authorization(
        access_key_id, date, region, service, terminator, signed, parameters["Signature"]
    )


def _skew_problem(amz_date: str, now: float) -> str | None:
    """AWS's messages for a signature over five minutes old or ahead of ``now``."""
    signed = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    current = datetime.fromtimestamp(now, UTC)
    skew = timedelta(seconds=MAX_SIGNATURE_SKEW_S)
    show = current.strftime(_AMZ_DATE)
    if signed < current - skew:
        earliest = (current - skew).strftime(_AMZ_DATE)
        return f"Signature expired: {amz_date} is now earlier than {earliest} ({show} - 5 min.)"
    if signed > current + skew:
        latest = (current + skew).strftime(_AMZ_DATE)
        return (
            f"Signature not yet current: {amz_date} is still later than {latest} ({show} + 5 min.)"
        )
    return None


def _scope_problem(auth: _Authorization, amz_date: str, region: str) -> str | None:
    if auth.terminator != TERMINATOR:
        return (
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{auth.terminator}'."
        )
    if auth.service != SERVICE:
        return WRONG_SERVICE_MESSAGE
    if auth.region != region:
        return WRONG_REGION_MESSAGE
    if auth.date != amz_date[:8]:
        return (
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
            f"HTTP: '{auth.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    return None


# -- audio ----------------------------------------------------------------------------------------
_ENCODERS: dict[str, bool] = {}


async def ffmpeg_has_encoder(name: str) -> bool:
    """Whether ``ffmpeg -encoders`` lists ``name`` (asked once per process)."""
    if name not in _ENCODERS:
        process = await asyncio.create_subprocess_exec(
            find_ffmpeg(),
            "-hide_banner",
            "-encoders",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        output, _ = await process.communicate()
        listed = (line.split()[1:2] for line in output.decode(errors="replace").splitlines())
        _ENCODERS[name] = [name] in listed
    return _ENCODERS[name]


async def encode_polly(pcm: bytes, rate: int, output_format: str) -> bytes:
    """s16le mono at ``rate`` as Polly sends it for ``output_format`` (any but json)."""
    if output_format == "pcm":
        return encode_pcm(pcm, "pcm_s16le")
    if output_format == "mulaw":
        return encode_pcm(pcm, "pcm_mulaw")
    if output_format == "alaw":
        return encode_pcm(pcm, "pcm_alaw")
    if output_format == "ogg_opus":
        return await encode_with_ffmpeg(pcm, rate, "opus")
    if output_format == "ogg_vorbis":
        return await encode_with_ffmpeg(pcm, rate, "vorbis")
    return await encode_with_ffmpeg(pcm, rate, "mp3")


@dataclass(frozen=True)
class _Synthesis:
    spoken: str  # what is said: the text, or the SSML without its tags
    billed: int
    voice: PollyVoice
    request: SynthesisRequest
    sample_rate: int


def _text_problem(request: SynthesisRequest) -> tuple[str, int] | web.Response:
    """(spoken text, billed characters), or the InvalidSsml / TextLengthExceeded error."""
    if len(request.text) > MAX_TOTAL_CHARACTERS:
        return _error("TextLengthExceededException", TEXT_LENGTH_MESSAGE)
    ssml = request.text_type == "ssml"
    spoken = ssml_text(request.text) if ssml else request.text
    if spoken is None:
        return _error("InvalidSsmlException", INVALID_SSML_MESSAGE)
    if len(spoken) > MAX_BILLED_CHARACTERS:
        return _error("TextLengthExceededException", TEXT_LENGTH_MESSAGE)
    return " ".join(spoken.split()) if ssml else spoken, len(spoken)


def _marks_problem(request: SynthesisRequest) -> web.Response | None:
    if request.speech_mark_types and request.output_format != "json":
        return _error(
            "MarksNotSupportedForFormatException",
            f"Speech marks are not supported for the OutputFormat {request.output_format}.",
        )
    if "ssml" in request.speech_mark_types and request.text_type != "ssml":
        return _error(
            "SsmlMarksNotSupportedForTextTypeException",
            "SSML speech marks are not supported for plain text-type input.",
        )
    if request.output_format == "json":
        return _error("ValidationException", "Speech marks (OutputFormat json) are not simulated.")
    return None


def _rate_problem(request: SynthesisRequest) -> int | web.Response:
    rate = request.sample_rate or default_sample_rate(request.output_format, request.engine)
    allowed = SAMPLE_RATES[request.output_format]
    if rate not in allowed:
        return _error(
            "InvalidSampleRateException",
            f"Sample rate '{rate}' is not valid for OutputFormat {request.output_format}; "
            f"valid: {', '.join(allowed)}.",
        )
    return int(rate)


class FakePolly(FakeServer):
    """Simulated Amazon Polly: SynthesizeSpeech and DescribeVoices, signed with SigV4.

    Args:
        access_key_id, secret_access_key: the one valid key pair.
        region: the region the fake serves (the credential scope's region).
        session_token: temporary credentials' token; when set, ``X-Amz-Security-Token`` must
            carry it (and must be absent when it is not set).
        rate_limit_per_second: SynthesizeSpeech calls in any sliding second (Polly's 80 TPS).
        page_size: voices per DescribeVoices page.
        synthesizer, clock: see :class:`~tests.fakes.base.FakeServer` (``clock`` drives the
            rate limit; the signature's five minutes are checked against ``signing_clock``, the
            wall clock unless a test replaces it).

    ``characters_billed`` sums the billed characters of every synthesis; ``lexicons`` holds the
    lexicon names the account has (none: naming one is LexiconNotFoundException).
    """

    secret_headers: ClassVar[frozenset[str]] = FakeServer.secret_headers | {"x-amz-security-token"}

    def __init__(
        self,
        *,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY,
        region: str = DEFAULT_REGION,
        session_token: str | None = None,
        rate_limit_per_second: int = DEFAULT_RATE_LIMIT,
        page_size: int = DEFAULT_PAGE_SIZE,
        synthesizer: Synthesizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(synthesizer=synthesizer, clock=clock)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.session_token = session_token
        self.page_size = page_size
        self.limiter = RateLimiter(rate_limit_per_second, self.clock, window=1.0)
        self.signing_clock: Clock = time.time
        self.characters_billed = 0
        self.lexicons: set[str] = set()
        self._page_tokens: dict[str, tuple[tuple[str, str, bool], int]] = {}

    @property
    def host(self) -> str:
        """What the real endpoint's host would be (the fake answers on ``base_url``)."""
        return f"{SERVICE}.{self.region}.amazonaws.com"

    # -- public helpers for tests ---------------------------------------------------------------
    def inject_error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        count: int = 1,
        path: str = SYNTHESIZE_PATH,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Script ``count`` Polly-shaped errors (see :func:`polly_error`) for ``method path``."""
        replies = [
            ScriptedResponse(
                status, error_body(code, message), {**_error_headers(code), **(headers or {})}
            )
            for _ in range(count)
        ]
        self.script(method, path, *replies)

    def inject_throttling(self, count: int = 1) -> None:
        """The next ``count`` syntheses get 400 ``ThrottlingException`` "Rate exceeded"."""
        code = "ThrottlingException"
        self.inject_error(ERROR_STATUS[code], code, THROTTLING_MESSAGE, count=count)

    def inject_service_failure(self, count: int = 1) -> None:
        """The next ``count`` syntheses get 500 ``ServiceFailureException``."""
        code = "ServiceFailureException"
        self.inject_error(ERROR_STATUS[code], code, SERVICE_FAILURE_MESSAGE, count=count)

    def inject_access_denied(self, count: int = 1) -> None:
        """The next ``count`` syntheses get ``AccessDeniedException``: 403, the model's status."""
        code = "AccessDeniedException"
        self.inject_error(ERROR_STATUS[code], code, ACCESS_DENIED_MESSAGE, count=count)

    # -- routes -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(SYNTHESIZE_PATH, self._synthesize)
        app.router.add_get(VOICES_PATH, self._voices)

    def _log_entry(self, request: web.Request, body: bytes) -> LoggedRequest:
        """The base redacts the whole Authorization; SigV4's keeps all but its Signature."""
        entry = super()._log_entry(request, body)
        raw = request.headers.get("Authorization", "")
        if not raw.startswith(f"{ALGORITHM} "):
            return entry
        redacted = _SIGNATURE.sub(f"Signature={REDACTED}", raw)
        return replace(entry, headers={**entry.headers, "authorization": redacted})

    def _authenticate(self, request: web.Request, body: bytes) -> web.Response | None:
        """SigV4, checked as AWS does: the error response, or None when the request is signed."""
        header = request.headers.get("Authorization")
        if not header:
            return _error("MissingAuthenticationTokenException", MISSING_TOKEN_MESSAGE)
        amz_date = request.headers.get("X-Amz-Date")
        auth = _parse_authorization(header, amz_date)
        if isinstance(auth, str):
            return _error("IncompleteSignatureException", auth)
        assert amz_date is not None
        try:
            datetime.strptime(amz_date, _AMZ_DATE)
        except ValueError:
            return _error(
                "IncompleteSignatureException",
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601",
            )
        problem = _scope_problem(auth, amz_date, self.region)
        if problem is not None:
            return _error("InvalidSignatureException", problem)
        token = request.headers.get("X-Amz-Security-Token")
        if auth.access_key_id != self.access_key_id or token != self.session_token:
            return _error("UnrecognizedClientException", UNRECOGNIZED_CLIENT_MESSAGE)
        problem = _skew_problem(amz_date, self.signing_clock())
        if problem is not None:
            return _error("InvalidSignatureException", problem)
        return self._check_signature(request, body, auth, amz_date)

    def _check_signature(
        self, request: web.Request, body: bytes, auth: _Authorization, amz_date: str
    ) -> web.Response | None:
        received = {name: request.headers.getall(name, []) for name in auth.signed_headers}
        canonical = canonical_request(
            request.method, request.raw_path, received, auth.signed_headers, body
        )
        scope = f"{auth.date}/{auth.region}/{auth.service}/{TERMINATOR}"
        to_sign = string_to_sign(amz_date, scope, canonical)
        key = signing_key(self.secret_access_key, auth.date, auth.region, auth.service)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        declared = request.headers.get("X-Amz-Content-SHA256")
        body_hash = hashlib.sha256(body).hexdigest()
        if hmac.compare_digest(expected, auth.signature) and declared in (None, body_hash):
            return None
        message = (
            f"{SIGNATURE_MISMATCH_MESSAGE}\n\nThe Canonical String for this request should have "
            f"been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{to_sign}'\n"
        )
        return _error("InvalidSignatureException", message)

    # -- SynthesizeSpeech ---------------------------------------------------------------------
    def _plan(self, request: SynthesisRequest) -> _Synthesis | web.Response:
        """The checks after the model's, in the order the fake makes them."""
        voice = _BY_ID.get(request.voice_id)
        if voice is None:  # a valid VoiceId the catalogue lacks
            known = ", ".join(_BY_ID)
            message = f"Voice '{request.voice_id}' is not simulated; the fake has: {known}."
            return _error("ValidationException", message)
        text = _text_problem(request)
        if isinstance(text, web.Response):
            return text
        if request.engine not in voice.engines:
            message = f"This voice does not support the selected engine: {request.engine}"
            return _error("EngineNotSupportedException", message)
        if request.language_code is not None and not voice.speaks(request.language_code):
            message = f"Voice {voice.id} does not speak language {request.language_code}."
            return _error("LanguageNotSupportedException", message)
        for name in request.lexicon_names:
            if name not in self.lexicons:
                return _error("LexiconNotFoundException", f"Lexicon not found: {name}")
        refused = _marks_problem(request)
        if refused is not None:
            return refused
        rate = _rate_problem(request)
        if isinstance(rate, web.Response):
            return rate
        return _Synthesis(text[0], text[1], voice, request, rate)

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = self._authenticate(request, body)
        if refused is not None:
            return refused
        if not self.limiter.acquire():
            return _error("ThrottlingException", THROTTLING_MESSAGE)
        parsed = parse_synthesize_request(body)
        if isinstance(parsed, web.Response):
            return parsed
        plan = self._plan(parsed)
        if isinstance(plan, web.Response):
            return plan
        output_format = parsed.output_format
        if output_format == "ogg_vorbis" and not await ffmpeg_has_encoder("libvorbis"):
            message = "ogg_vorbis is not simulated: this ffmpeg has no libvorbis encoder."
            return _error("ValidationException", message)
        pcm, rate = await run_synthesizer(self.synthesizer, plan.spoken)
        pcm = resample(pcm, rate, plan.sample_rate)
        audio = await encode_polly(pcm, plan.sample_rate, output_format)
        self.billed.append(BilledCall(f"{plan.voice.id}/{parsed.engine}", parsed.text))
        self.characters_billed += plan.billed
        headers = {
            "Content-Type": CONTENT_TYPES[output_format],
            "x-amzn-RequestCharacters": str(plan.billed),
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        return web.Response(body=audio, headers=headers)

    # -- DescribeVoices -----------------------------------------------------------------------
    def _listing_filters(self, request: web.Request) -> tuple[str, str, bool] | web.Response:
        """(Engine, LanguageCode, IncludeAdditionalLanguageCodes) from the query; or the 400."""
        query = request.query
        fields: dict[str, Any] = {
            name: query[name] for name in ("Engine", "LanguageCode", "NextToken") if name in query
        }
        include = query.get("IncludeAdditionalLanguageCodes")
        if include is not None:
            if include.lower() not in ("true", "false"):
                message = (
                    f"Cannot convert '{include}' to a boolean: IncludeAdditionalLanguageCodes."
                )
                return _error("SerializationException", message)
            fields["IncludeAdditionalLanguageCodes"] = include.lower() == "true"
        problems = _validate("DescribeVoicesInput", fields)
        if problems:
            return _validation_error(problems)
        return (
            fields.get("Engine", ""),
            fields.get("LanguageCode", ""),
            fields.get("IncludeAdditionalLanguageCodes", False),
        )

    def _page_token(self, filters: tuple[str, str, bool], offset: int) -> str:
        seed = json.dumps([*filters, offset]).encode()
        token = base64.urlsafe_b64encode(hashlib.sha256(seed).digest()[:18]).decode()
        self._page_tokens[token] = (filters, offset)
        return token

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = self._authenticate(request, body)
        if refused is not None:
            return refused
        filters = self._listing_filters(request)
        if isinstance(filters, web.Response):
            return filters
        engine, language, include_additional = filters
        offset = 0
        token = request.query.get("NextToken")
        if token:
            issued = self._page_tokens.get(token)
            if issued is None or issued[0] != filters:
                return _error("InvalidNextTokenException", f"Invalid NextToken: {token}")
            offset = issued[1]
        matching = [
            voice
            for voice in VOICES
            if (not engine or engine in voice.engines)
            and (
                not language
                or voice.language_code == language
                or (include_additional and language in voice.additional_language_codes)
            )
        ]
        page = matching[offset : offset + self.page_size]
        answer: dict[str, Any] = {"Voices": [voice.to_json() for voice in page]}
        if offset + self.page_size < len(matching):
            answer["NextToken"] = self._page_token(filters, offset + self.page_size)
        return web.json_response(answer, headers={"x-amzn-RequestId": str(uuid.uuid4())})

"""What every HTTP provider client shares: one reused aiohttp session, error text extraction,
the one status → exception table, transport failures mapped to
:class:`~bot.errors.ProviderUnavailable`, and audio sniffing.

A provider adds only its own statuses to the table (its API decides what 402, 406 or 422 means).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot import __version__
from bot.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRequestError,
    ProviderUnavailable,
    RateLimited,
)
from bot.ops.logs import mask_secrets
from bot.providers.ratelimit import retry_after_s
from bot.speech import AudioEncoding

# aiohttp (~90 ms to import) is imported when the first request is made: a provider that is
# listed but not used (`oyez voices` without its API key, `oyez say` with Piper) costs nothing.
if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "STATUSES",
    "ErrorResponse",
    "HttpClient",
    "NotSent",
    "StatusRule",
    "encoding_from_response",
    "error_text",
    "sniff_encoding",
    "status_error",
]

USER_AGENT = f"oyez/{__version__}"
_MAX_ERROR_TEXT = 300
_TAGS = re.compile(r"<[^>]+>")


def error_text(body: bytes, limit: int = _MAX_ERROR_TEXT) -> str:
    """The provider's own error message from a response body.

    Understands ``{"error": "..."}`` (Segmind), ``{"error": {"message": ...}}`` (Together,
    OpenAI), ``{"detail": {"message": ...}}`` and ``{"detail": "..."}`` (FastAPI servers such as
    Kokoro-FastAPI), ``{"message": ...}`` and AWS's ``{"Message": ...}``; HTML pages are
    reduced to their text.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        for key in ("error", "detail", "message", "Message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("error") or value.get("detail")
            if isinstance(value, list) and value:  # FastAPI validation errors
                value = "; ".join(
                    str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                    for item in value
                )
            if value:
                message = value
                break
    if message is None:
        message = _TAGS.sub(" ", text) if text.startswith("<") else text
    cleaned = mask_secrets(" ".join(str(message).split()))  # it may quote the key
    if not cleaned:
        return "no error message"
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An HTTP answer with a status >= 400, from ``provider`` about ``model``."""

    provider: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    model: str | None

    @property
    def message(self) -> str:
        """The provider's own error message (:func:`error_text`)."""
        return error_text(self.body)


#: What one status means: a :class:`ProviderError` subclass, built as ``cls(provider, message,
#: model=..., status=...)``, or a function of the response when the body decides.
StatusRule = type[ProviderError] | Callable[[ErrorResponse], ProviderError]


def _rate_limited(response: ErrorResponse) -> ProviderError:
    hint = retry_after_s(response.headers)
    return RateLimited(
        response.provider, response.message, retry_after_s=hint, model=response.model
    )


#: The statuses every HTTP provider's API means the same by; 5xx are :class:`ProviderUnavailable`.
STATUSES: Mapping[int, StatusRule] = {
    400: ProviderRequestError,
    401: ProviderAuthError,
    403: ProviderAuthError,
    404: ProviderNotFound,
    429: _rate_limited,
}


def status_error(
    response: ErrorResponse, own: Mapping[int, StatusRule] | None = None
) -> ProviderError:
    """The exception for an error ``response``: the provider's ``own`` rule for its status, else
    :data:`STATUSES`, else :class:`ProviderUnavailable` for 5xx and :class:`ProviderError`."""
    status = response.status
    rule = (own or {}).get(status) or STATUSES.get(status)
    if rule is None:
        rule = ProviderUnavailable if status >= 500 else ProviderError
    if isinstance(rule, type):  # mypy reads the narrowed class as type[Any]: annotate it
        error: ProviderError = rule(
            response.provider, response.message, model=response.model, status=status
        )
        return error
    return rule(response)


_MIME: dict[str, AudioEncoding] = {
    "audio/wav": AudioEncoding.WAV,
    "audio/x-wav": AudioEncoding.WAV,
    "audio/wave": AudioEncoding.WAV,
    "audio/vnd.wave": AudioEncoding.WAV,
    "audio/mpeg": AudioEncoding.MP3,
    "audio/mp3": AudioEncoding.MP3,
    "audio/ogg": AudioEncoding.OGG_OPUS,
    "audio/opus": AudioEncoding.OGG_OPUS,
    "audio/flac": AudioEncoding.FLAC,
    "audio/x-flac": AudioEncoding.FLAC,
    "audio/aac": AudioEncoding.AAC,
}


def sniff_encoding(data: bytes) -> AudioEncoding | None:
    """Recognise a container from its first bytes (for ``application/octet-stream`` bodies)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return AudioEncoding.WAV
    if data[:4] == b"OggS":
        return AudioEncoding.OGG_OPUS
    if data[:4] == b"fLaC":
        return AudioEncoding.FLAC
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        if len(data) > 1 and data[0] == 0xFF and data[1] & 0x06 == 0:
            return AudioEncoding.AAC  # ADTS: layer bits are 00
        return AudioEncoding.MP3
    return None


def encoding_from_response(content_type: str, data: bytes) -> AudioEncoding | None:
    """The encoding of an audio body: the Content-Type when it is specific, else sniffed."""
    mime = content_type.split(";")[0].strip().lower()
    return _MIME.get(mime) or sniff_encoding(data)


class NotSent(ProviderUnavailable):
    """No connection could be made: the request never reached the API, so sending it again
    cannot do anything twice (unlike a timeout or a dropped connection after sending)."""


class HttpClient:
    """One aiohttp session per provider, opened on first use and reused.

    ``headers`` (the API key among them) go only to ``base_url``; media downloads from other
    hosts use :meth:`download`, which sends none of them. ``statuses`` are the API's own status
    rules on top of :data:`STATUSES`. Pass ``session`` to share a session you own: the client
    then never closes it.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        statuses: Mapping[int, StatusRule] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.provider = provider
        self.statuses = dict(statuses or {})
        self.base_url = base_url.rstrip("/")
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self.timeout_s = timeout_s
        self._session = session
        self._owns_session = session is None

    async def session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=15)
            )
            self._owns_session = True
        return self._session

    @asynccontextmanager
    async def request(  # noqa: PLR0913 - keyword-only options, as aiohttp's request()
        self,
        method: str,
        path: str,
        *,
        model: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        streaming: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request to ``base_url + path``; yield the response when its status is < 400.

        ``data`` is sent as it is (a signed body: :mod:`integrations.polly`), with ``headers``
        on top of the client's own.

        A status >= 400 raises what :meth:`error` maps it to; connection failures and timeouts
        raise :class:`ProviderUnavailable` (:class:`NotSent` when no connection was made). With
        ``streaming``, the timeout bounds the wait for each read rather than the whole body.
        """
        import aiohttp

        limit = timeout_s or self.timeout_s
        timeout = (
            aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=limit)
            if streaming
            else aiohttp.ClientTimeout(total=limit, sock_connect=15)
        )
        sent = dict(self._headers)
        if json_body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        session = await self.session()
        try:
            async with session.request(
                method,
                self.base_url + path,
                headers=sent,
                json=json_body,
                data=data,
                params=params,
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    body = await response.read()
                    raise self.error(response.status, response.headers, body, model)
                yield response
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(
                self.provider, f"cannot reach the API: {type(exc).__name__}", model=model
            ) from None
        except TimeoutError:
            raise ProviderUnavailable(
                self.provider, f"no answer within {limit:g} s", model=model
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                self.provider, f"cannot reach the API: {type(exc).__name__}", model=model
            ) from None

    def error(
        self, status: int, headers: Mapping[str, str], body: bytes, model: str | None
    ) -> ProviderError:
        """The exception this API's error answer means (:func:`status_error`)."""
        return status_error(
            ErrorResponse(self.provider, status, headers, body, model), self.statuses
        )

    async def download(self, url: str, *, model: str | None, timeout_s: float = 120) -> bytes:
        """GET a media URL the API returned, with no API key. Returns the body bytes."""
        import aiohttp

        session = await self.session()
        try:
            async with session.get(
                url,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=15),
            ) as response:
                body = await response.read()
                if response.status >= 400:
                    raise ProviderUnavailable(
                        self.provider,
                        f"downloading the audio failed: {error_text(body)}",
                        model=model,
                        status=response.status,
                    )
                return body
        except TimeoutError:
            raise ProviderUnavailable(
                self.provider, f"downloading the audio took over {timeout_s:g} s", model=model
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                self.provider, f"cannot download the audio: {type(exc).__name__}", model=model
            ) from None

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let aiohttp close its transports before the loop ends

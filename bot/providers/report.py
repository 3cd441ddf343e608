"""The credits report shared by ``oyez credits`` and Discord's ``/credits``."""

from __future__ import annotations

from bot.errors import OyezError
from bot.providers.base import ProviderRegistry
from bot.providers.dispatch import Dispatcher

__all__ = ["credits_report"]


async def credits_report(
    registry: ProviderRegistry,
    dispatcher: Dispatcher,
    names: list[str] | None = None,
    *,
    live: bool = True,
) -> list[str]:
    """Per provider: balance (fetched when ``live`` and an endpoint exists), today's spend
    against its budget, its rate limits, and its credit circuit with the reason. One line each.

    Raises :class:`bot.errors.UnknownProvider` for an unknown name.
    """
    budgets = dispatcher.settings.budgets
    lines: list[str] = []
    for name in names or registry.names():
        provider = registry.get(name)
        problem = provider.configuration_problem()
        lines.append(f"{name}{'' if provider.paid else ' (free)'}")
        if problem:
            lines.append(f"  not configured: {problem}")
            continue
        balance = "unknown"
        if live:
            try:
                fetched = await provider.check_credits()
            except OyezError as exc:
                balance = f"check failed: {exc}"
            else:
                if fetched is not None:
                    await dispatcher.ledger.set_balance(name, fetched)
        known = await dispatcher.ledger.balance(name) if provider.paid else None
        if known is not None:
            balance = f"${known[0]:.4f} (as of {known[1]:%Y-%m-%d %H:%M} UTC)"
        if provider.paid:
            lines.append(f"  credits   {balance}")
            spent = await dispatcher.ledger.spent_today(provider=name)
            cap = budgets.providers.get(name)
            limit = f" of ${cap:.2f} budget" if cap is not None else " (no budget)"
            lines.append(f"  spent     ${spent:.4f} today{limit}")
        voice = await provider.resolve_voice(None, None)
        state = dispatcher.limiter(provider, voice).state()
        rpm = state.requests_per_minute
        lines.append(
            f"  limits    {f'{rpm:g} per minute' if rpm else 'no per-minute limit'}, "
            f"{state.max_concurrent or 'any number of'} at once"
        )
        if not provider.paid:
            continue
        circuit = await dispatcher.ledger.circuit(name)
        if circuit is None:
            lines.append("  circuit   closed: paid calls allowed")
        else:
            lines.append(
                f"  circuit   OPEN since {circuit.opened_at:%Y-%m-%d %H:%M} UTC: "
                f"{circuit.reason}; next check {circuit.next_check_at:%H:%M:%S} UTC"
            )
    return lines

"""ISO 4217 minor units: how many minor units make one whole unit of a programme's currency.

Sale amounts (``total``, ``price``, a return's ``amount``, a promotion's ``min_total``, an
``amount_off`` reward's value) are in the currency's minor units; the programme's rate is points
per *whole* unit. A whole unit is 10 ** exponent minor units, the exponent being ISO 4217's
"minor unit" column: 2 for USD, EUR, GBP (cents), 0 for JPY or KRW (no minor unit), 3 for KWD or
BHD (fils), 4 for CLF.

The table comes from the ``iso4217`` package, which ships the ISO 4217 list as published by
its maintenance agency (``Pblshd`` date in ``iso4217.__published__``) and is re-released when
the list is amended. Not Babel's ``get_currency_precision``: that is CLDR's *display*
precision, which differs from ISO 4217 for 13 currencies (IQD 0 instead of 3; AFN, IRR, LBP,
RSD, ... 0 instead of 2), and it answers 2 for a code it does not know, so it cannot tell an
unknown code either. A hand-written table of the exponents that are not 2 would do for the
arithmetic but not for refusing codes that do not exist.
"""

from __future__ import annotations

from iso4217 import Currency

#: The exponent of a code stored before the admin API checked codes (any three capitals were
#: taken), or of a currency ISO 4217 has since withdrawn: 2, the one every sale used before
#: the exponent was read (so such a merchant earns as it always did).
LEGACY_EXPONENT = 2

#: ISO 4217 code -> minor-unit exponent, for the currencies that have one (the funds and
#: metals marked "N.A.", such as XAU or XDR, and the testing codes XTS and XXX have none).
_EXPONENTS: dict[str, int] = {c.code: c.exponent for c in Currency if c.exponent is not None}
#: ISO 4217 code -> minor units per whole unit.
_PER_UNIT: dict[str, int] = {code: 10**e for code, e in _EXPONENTS.items()}
_LEGACY_PER_UNIT: int = 10**LEGACY_EXPONENT


def exponent(code: str) -> int | None:
    """The ISO 4217 minor-unit exponent of ``code``, or None if it is not a current ISO 4217
    currency with a minor unit (the admin API refuses such a code)."""
    return _EXPONENTS.get(code)


def minor_per_unit(code: str) -> int:
    """How many minor units make one whole unit of ``code`` (100 for USD, 1 for JPY, 1000 for
    KWD); 10 ** ``LEGACY_EXPONENT`` for a code not in the table (see there)."""
    return _PER_UNIT.get(code, _LEGACY_PER_UNIT)

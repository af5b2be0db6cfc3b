"""Example frames, per message, for the AsyncAPI document (``protocol.asyncapi``): each is a
real frame, so a test decodes every one as the message it illustrates.

``EXAMPLES`` maps a frame's Struct name to ``(example name, frame)`` pairs; the loyalty
programme's and the wallet's frames bring their own (``loyalty.EXAMPLES``, ``wallet.EXAMPLES``).
``RESULTS`` holds a ``result`` of each kind, as the guide (protocol/README.md) shows them.
"""

import msgspec

from protocol import loyalty, wallet
from protocol.codec import decode_server
from protocol.codes import ErrorCode
from protocol.messages import (
    Balance,
    BalanceChanged,
    Cause,
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    Hello,
    HoldState,
    Notice,
    Outcome,
    Peer,
    Ping,
    PointsLine,
    Pong,
    Presence,
    Refresh,
    Refreshed,
    Release,
    Reserve,
    Result,
    Resync,
    Sale,
    SaleLine,
    SaleReceipt,
    Scope,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)

_B = Balance(member="m-42", posted=1250, held=0, available=1250, version=17)
_B_HELD = Balance(member="m-42", posted=1250, held=500, available=750, version=18)
_B_AFTER = Balance(member="m-42", posted=1375, held=0, available=1375, version=18)
_CHANGED = BalanceChanged(
    member="m-42",
    posted=1375,
    held=0,
    available=1375,
    version=18,
    cause=Cause(kind="earn", op="pos7-000123", channel="pos", store="s-1"),
    at=1_735_689_600_000,
)
_RECEIPT = SaleReceipt(
    op="pos7-000123",
    member="m-42",
    points=125,
    breakdown=[PointsLine(rule="base-1-per-euro", points=125)],
    balance=_B_AFTER,
)
_HOLD = HoldState(
    op="pos7-000124",
    hold="pos7-000124",
    member="m-42",
    status="active",
    points=500,
    expires_at=1_735_689_720_000,
    balance=_B_HELD,
)

#: Example frames per message (Struct class name): ``(example name, frame)``.
EXAMPLES: dict[str, list[tuple[str, msgspec.Struct]]] = {
    "Hello": [("hello", Hello(id="1", versions=[1], token="eyJhbGciOi...", client="pos/7.2"))],
    "Ping": [("ping", Ping(id="2"))],
    "Refresh": [("refresh", Refresh(id="2b", token="eyJhbGciOi..."))],
    "Subscribe": [("resume", Subscribe(id="3", member="m-42", since=17))],
    "Unsubscribe": [("unsubscribe", Unsubscribe(id="4", member="m-42"))],
    "GetBalance": [("balance", GetBalance(id="5", member="m-42"))],
    "Sale": [
        (
            "sale",
            Sale(
                id="6",
                op="pos7-000123",
                member="m-42",
                total=12_550,
                lines=[SaleLine(sku="sku-1", qty=2, price=6_275, category="coffee")],
            ),
        )
    ],
    "Reserve": [("reserve", Reserve(id="7", op="pos7-000124", member="m-42", points=500))],
    "Commit": [
        (
            "partial",
            Commit(id="8", op="pos7-000125", member="m-42", hold="pos7-000124", points=300),
        )
    ],
    "Release": [("release", Release(id="9", op="pos7-000126", member="m-42", hold="pos7-000124"))],
    "GetOutcome": [("outcome", GetOutcome(id="10", op="pos7-000123"))],
    "Welcome": [
        (
            "welcome",
            Welcome(
                id="1",
                version=1,
                session="s-9f2c",
                node="gw-1",
                heartbeat_ms=25_000,
                scope=Scope(kind="pos", merchant="acme", store="s-1", terminal="pos7"),
            ),
        )
    ],
    "Result": [
        ("pong", Result(id="2", data=Pong())),
        ("refreshed", Result(id="2b", data=Refreshed(expires_at=1_735_693_200_000))),
        ("balance", Result(id="5", data=_B)),
        ("subscribed", Result(id="3", data=Subscribed(member="m-42", balance=_B_AFTER))),
        ("sale", Result(id="6", data=_RECEIPT)),
        ("hold", Result(id="7", data=_HOLD)),
        ("outcome", Result(id="10", data=Outcome(op="pos7-000123", ok=True, data=_RECEIPT))),
    ],
    "Error": [
        (
            "insufficient_points",
            Error(
                id="7",
                code=ErrorCode.INSUFFICIENT_POINTS,
                message=ErrorCode.INSUFFICIENT_POINTS.description,
            ),
        )
    ],
    "BalanceChanged": [("earn", _CHANGED)],
    "Resync": [("resync", Resync(member="m-42", balance=_B_AFTER, reason="gap"))],
    "Presence": [
        (
            "app online",
            Presence(member="m-42", online=[Peer(session="gw-2-17", channel="app", node="gw-2")]),
        )
    ],
    "Notice": [
        (
            "offer",
            Notice(
                notice="n-1f2e",
                merchant="acme",
                kind="offer",
                payload={"title": "Double points on coffee today"},
                at=1_735_689_600_000,
            ),
        )
    ],
}
for _module in (loyalty, wallet):  # the loyalty programme's and the wallet's frames
    for _name, _examples in _module.EXAMPLES.items():
        EXAMPLES.setdefault(_name, []).extend(_examples)

#: A ``result`` of every kind the other examples do not show, as the guide's exchanges have
#: them (decoded here, so each is a valid frame).
_REPLIES = [
    ("unsubscribed", '{"type":"result","id":"4","data":{"kind":"unsubscribed","member":"m-42"}}'),
    (
        "enrolled",
        '{"type":"result","id":"20","data":{"kind":"member","member":"m-9f2c41d07a1b3e55",'
        '"created":true,"phone":"+14155552671","email":"ada@example.com",'
        '"balance":{"posted":0,"held":0,"available":0,"version":0}}}',
    ),
    (
        "pass",
        '{"type":"result","id":"21","data":{"kind":"pass","member":"m-9f2c41d07a1b3e55",'
        '"token":"eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJwYXNzIn0.sig","expires_at":1735689900000}}',
    ),
    (
        "history",
        '{"type":"result","id":"23","data":{"kind":"history","member":"m-42","purchases":[{"op":'
        '"pos7-000123","at":1735689600000,"channel":"pos","store":"s-1","total":12550,'
        '"points":125,"lines":[{"sku":"latte","qty":2,"price":6275,"category":"coffee"}]}],'
        '"next":"1187"}}',
    ),
    (
        "code issued",
        '{"type":"result","id":"24","data":{"kind":"code","code":"RW-7KQ2M9XTAB","reward":'
        '"ten-off","member":"m-42","status":"issued","points":500,"expires_at":1738281600000,'
        '"name":"$10 off","reward_kind":"amount_off","value":1000,'
        '"balance":{"posted":875,"held":0,"available":875,"version":19}}}',
    ),
    (
        "return",
        '{"type":"result","id":"27","data":{"kind":"return","op":"pos7-000132","sale":'
        '"pos7-000123","member":"m-42","clawback":62,"restored":0,"applied":-62,"uncollected":0,'
        '"breakdown":[{"rule":"return","points":-62},{"rule":"refund","points":0}],'
        '"balance":{"posted":813,"held":0,"available":813,"version":20}}}',
    ),
    (
        "cashier view",
        '{"type":"result","id":"28","data":{"kind":"cashier_view","member":{"kind":"member",'
        '"member":"m-42","phone":"+14155552671","tier":"silver"},"balance":{"posted":813,'
        '"held":0,"available":813,"version":20},"tier":{"tier":"silver","name":"Silver",'
        '"qualifying":188,"window_days":365,"next":"gold","next_name":"Gold",'
        '"next_threshold":1000,"to_next":812,"rank":1,"tiers":2},"rewards":[{"reward":"ten-off",'
        '"name":"$10 off","cost":500,"reward_kind":"amount_off","value":1000,"affordable":true}],'
        '"codes":[],"recent":[],"offers":[{"offer":"today","name":"Bonus today","bonus":100,'
        '"ends_at":1735693200000}]}}',
    ),
    (
        "wallet",
        '{"type":"result","id":"40","data":{"kind":"wallet","member":{"kind":"member","member":'
        '"m-42","email":"ada@example.org","tier":"silver"},"balance":{"posted":1250,"held":0,'
        '"available":1250,"version":17},"tier":{"tier":"silver","name":"Silver","qualifying":188,'
        '"window_days":365,"next":"gold","next_name":"Gold","next_threshold":1000,"to_next":812,'
        '"rank":1,"tiers":2},"rewards":[],"codes":{"kind":"codes","member":"m-42",'
        '"codes":[]},"offers":[],"history":{"kind":"history","member":"m-42","purchases":[]},'
        '"profile":{"kind":"profile","member":"m-42","email":"ada@example.org","tier":"silver"},'
        '"seq":7,"subscribed":true}}',
    ),
    (
        "used codes",
        '{"type":"result","id":"41","data":{"kind":"codes","member":"m-42","codes":[{"kind":'
        '"code","code":"RW-2H7QWX4ZNA","reward":"coffee","member":"m-42","status":"redeemed",'
        '"points":200,"expires_at":1738368000000,"reward_kind":"free_item","sku":"latte"}]}}',
    ),
    (
        "profile",
        '{"type":"result","id":"42","data":{"kind":"profile","member":"m-42","email":'
        '"ada@example.org","birthday":{"month":3,"day":14},"consent":{"email":{"granted":true,'
        '"at":1735689600000,"source":"app"},"sms":{"at":1735689600000,"source":"app"}},'
        '"tier":"silver"}}',
    ),
    (
        "verification sent",
        '{"type":"result","id":"43","data":{"kind":"verification","contact":"email","to":'
        '"a***@example.org","expires_at":1735690200000}}',
    ),
]
EXAMPLES["Result"].extend((name, decode_server(raw)) for name, raw in _REPLIES)


def results_of(data: type) -> list[tuple[str, msgspec.Struct]]:
    """The ``result`` examples whose data is a ``data``."""
    return [
        (name, frame)
        for name, frame in EXAMPLES["Result"]
        if isinstance(frame, Result) and type(frame.data) is data
    ]

"""Reorder loops: when each member runs out of each replenishable product it bought
(``predict``, kept by the ``Predictor`` worker off the sale path), and the merchants' loops
(``ReorderLoops``: products, lead time, messages from sandboxed Jinja2 templates, incentive,
channels, quiet hours, cap, control share). Owns the tables reorder_events,
reorder_predictions, reorder_population (0121_reorder.sql) and reorder_loops
(0123_reorder_loops.sql), reorder_reminders (the scheduler's) and reorder_messages (the
outbox). This is its public face."""

from gateway.reorder.carts import Carts, CartView
from gateway.reorder.chart import svg
from gateway.reorder.dispatch import Dispatcher, DispatchPass, capped_until, quiet_until
from gateway.reorder.job import REORDER_INTERVAL, ReorderJob, ReorderPass
from gateway.reorder.links import CartLink, LinkRefused, LinkSigner, UnsubscribeLink
from gateway.reorder.loops import (
    MAX_MESSAGES,
    MAX_PRODUCTS,
    Cap,
    Channel,
    Incentive,
    Loop,
    LoopSpec,
    Message,
    QuietHours,
    ReorderLoops,
)
from gateway.reorder.outbox import Outbox, OutboxPass, backoff
from gateway.reorder.predict import (
    MIN_BUYERS,
    MIN_OWN_INTERVALS,
    POPULATION_PERCENTILE,
    SAME_PURCHASE,
    Method,
    Population,
    Prediction,
    predict,
    restocks,
)
from gateway.reorder.predictions import PredictionPass, PredictionRows, Predictor
from gateway.reorder.report import (
    Group,
    Messages,
    Report,
    Uplift,
    csv_text,
    newcombe,
    relative,
    wilson,
    z_test,
)
from gateway.reorder.rewards import REORDER_REWARD, ReorderReward, Rewarder, RewardPass, reward_op
from gateway.reorder.schedule import LOOKAHEAD, STALE, SchedulePass, Scheduler, control_point
from gateway.reorder.service import Reorder
from gateway.reorder.templates import VARIABLES, Rendered, TemplateError, render

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (REORDER_REWARD,)

__all__ = [
    "ATTACHMENTS",
    "LOOKAHEAD",
    "MAX_MESSAGES",
    "MAX_PRODUCTS",
    "MIN_BUYERS",
    "MIN_OWN_INTERVALS",
    "POPULATION_PERCENTILE",
    "REORDER_INTERVAL",
    "REORDER_REWARD",
    "SAME_PURCHASE",
    "STALE",
    "VARIABLES",
    "Cap",
    "CartLink",
    "CartView",
    "Carts",
    "Channel",
    "DispatchPass",
    "Dispatcher",
    "Group",
    "Incentive",
    "LinkRefused",
    "LinkSigner",
    "Loop",
    "LoopSpec",
    "Message",
    "Messages",
    "Method",
    "Outbox",
    "OutboxPass",
    "Population",
    "Prediction",
    "PredictionPass",
    "PredictionRows",
    "Predictor",
    "QuietHours",
    "Rendered",
    "Reorder",
    "ReorderJob",
    "ReorderLoops",
    "ReorderPass",
    "ReorderReward",
    "Report",
    "RewardPass",
    "Rewarder",
    "SchedulePass",
    "Scheduler",
    "TemplateError",
    "UnsubscribeLink",
    "Uplift",
    "backoff",
    "capped_until",
    "control_point",
    "csv_text",
    "newcombe",
    "predict",
    "quiet_until",
    "relative",
    "render",
    "restocks",
    "reward_op",
    "svg",
    "wilson",
    "z_test",
]

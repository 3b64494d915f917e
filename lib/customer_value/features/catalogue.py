"""The feature catalogue: every feature column with its group, window and meaning, from the configuration.

`docs/features.md` is generated from here (`customer-value feature-catalogue`), and a test checks that the
features table has exactly these columns, so the catalogue cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from customer_value.config import FeaturesConfig


@dataclass(frozen=True)
class FeatureDef:
    name: str
    group: str
    window: str
    meaning: str


def catalogue(cfg: FeaturesConfig) -> list[FeatureDef]:
    f: list[FeatureDef] = []
    add = lambda name, group, window, meaning: f.append(FeatureDef(name, group, window, meaning))  # noqa: E731
    allw = "all history"
    add("recency_days", "rfm", allw, "days from the last completed order to the snapshot")
    add("frequency_orders", "rfm", allw, "completed orders")
    add("frequency_days", "rfm", allw, "distinct days with a completed order")
    add("monetary_total", "rfm", allw, "spend on completed orders (order totals net of discount, as the labels count them)")
    add("monetary_mean", "rfm", allw, "mean completed order value")
    add("monetary_max", "rfm", allw, "largest completed order value")
    add("monetary_first", "rfm", allw, "spend on the first purchase day (null without one): Gamma-Gamma models the repeat purchases")
    add("tenure_days", "rfm", allw, "days from signup (or first activity) to the snapshot")
    add("bgnbd_x", "rfm", allw, "BG/NBD x: repeat purchase days (distinct purchase days - 1)")
    add("bgnbd_t_x", "rfm", allw, "BG/NBD t_x: days from first to last purchase")
    add("bgnbd_T", "rfm", allw, "BG/NBD T: days from first purchase to the snapshot")
    for w in cfg.windows:
        win = f"last {w} days"
        add(f"orders_{w}d", "windows", win, "orders placed (any status)")
        add(f"spend_{w}d", "windows", win, "spend on completed orders")
        add(f"items_{w}d", "windows", win, "items in completed orders")
        add(f"discount_share_{w}d", "windows", win, "discount over gross value of completed orders")
        add(f"cancellations_{w}d", "windows", win, "cancelled orders")
        add(f"returns_{w}d", "windows", win, "returned orders")
    for w in cfg.windows:
        add(f"spend_trend_{w}d", "trends", f"last {w} vs the {w} before", "spend change from the previous window")
    add("spend_rate_slope", "trends", "all windows", "slope of daily spend rate over log window length")
    add("ipt_mean_days", "inter_purchase", allw, "mean gap between purchase days")
    add("ipt_std_days", "inter_purchase", allw, "standard deviation of gaps between purchase days")
    add("since_last_over_usual", "inter_purchase", allw, "days since last purchase / mean gap")
    for w in cfg.windows:
        win = f"last {w} days"
        add(f"sessions_{w}d", "behaviour", win, "sessions, each counted on every day it is active (split at midnight)")
        add(f"page_views_{w}d", "behaviour", win, "page views")
        add(f"searches_{w}d", "behaviour", win, "searches")
        add(f"favourites_{w}d", "behaviour", win, "products added to favourites")
        add(f"cart_adds_{w}d", "behaviour", win, "cart adds")
        add(f"days_active_{w}d", "behaviour", win, "days with any event")
    add("last_active_days", "behaviour", allw, "days from the last event to the snapshot")
    for w in cfg.windows:
        add(f"cart_to_order_{w}d", "behaviour", f"last {w} days", "orders per cart add (null without cart adds)")
    add("review_count", "reviews", allw, "reviews written")
    add("rating_mean", "reviews", allw, "mean rating given")
    add("review_sentiment", "reviews", allw, "mean sentiment of review texts, -1..1 (lexicon, pandas UDF)")
    add("category_count", "category_mix", allw, "distinct categories bought")
    add("top_category_share", "category_mix", allw, "share of items in the most bought category")
    add("category_entropy", "category_mix", allw, "entropy of the category mix (nats)")
    add("age_band", "static", "-", "age band at the snapshot (from the birth month; features.age_bands)")
    add("gender", "static", "-", "gender as given, or unknown")
    add("city_tier", "static", "-", "1 = largest markets, 2, 3 = other, unknown (features.city_tiers)")
    add("acquisition_channel", "static", "-", "how the customer came")
    add("signup_cohort", "static", "-", "signup year and quarter, e.g. 2024Q3")
    add("shop_season_index", "context", f"last year's next {cfg.horizon_days} days",
        "the shop's spend in last year's same horizon window over its mean for a window that long (null without a year)")
    n = cfg.sequence_length
    add("seq_days_before", "sequence", f"last {n} orders", "days before the snapshot of each completed order, newest first")
    add("seq_amount", "sequence", f"last {n} orders", "their values, aligned with seq_days_before")
    add("seq_items", "sequence", f"last {n} orders", "their item counts, aligned with seq_days_before")
    return f


# How each group respects the snapshot S: what it reads, as known when. Rendered into docs/features.md.
POINT_IN_TIME = {
    "rfm": "order versions known before S (`as_of`), orders placed before S, status as known then",
    "windows": "the same orders, placed in [S - w, S) (and [S - 2w, S - w) for trends)",
    "trends": "derived from the window features only",
    "inter_purchase": "purchase days before S of orders completed as known at S",
    "behaviour": "events with `event_ts` before S (events are append-only: no versions)",
    "reviews": "review versions known before S, written before S (an edit after S is not seen)",
    "category_mix": "item lines of orders completed as known at S, placed before S",
    "static": "the profile version known before S; age from the birth month at S; cohort from the signup date",
    "sequence": "the last orders placed before S, completed as known at S; days counted back from S",
    "context": "all customers' completed orders placed before S, as known at S (one value per snapshot)",
}


def markdown(cfg: FeaturesConfig) -> str:
    defs = catalogue(cfg)
    lines = [
        "# Feature catalogue",
        "",
        "Generated by `customer-value feature-catalogue` from `lib/customer_value/features/catalogue.py` and",
        "`conf/base.yaml` (do not edit by hand). Every feature of `gold.customer_features` is computed per",
        "pseudonymised customer from data known strictly before the snapshot date S; windows end the day before S.",
        "Labels (`gold.customer_labels`) use [S, S + horizon) only.",
        "",
        "## Point in time: what a feature at S may see",
        "",
        "Silver keeps every version of an order, a customer profile and a review (`silver.order_history`,",
        "`silver.customer_history`, `silver.review_history`), each with `valid_from` (its `updated_at`, never",
        "before the event itself) and `valid_to` (the next version's `valid_from`; null while current); the",
        "`silver.orders`, `silver.customers` and `silver.reviews` tables analysts read are their open versions.",
        "Features at S read each key's version with `valid_from < S <= valid_to` (or open): the state as the shop",
        "knew it just before S. So a return, a status change or an amount correction recorded at or after S, a",
        "profile edit after S, and a row that arrives late (event before S, `updated_at` after S) leave the",
        "features at S unchanged; an order placed before S is seen with the status it had then. Labels read the",
        "orders as known just before S + H. Order item lines and behaviour events are append-only and filtered",
        "by their order's or their own time; they carry no time of recording, so an event sent days late is",
        "seen by a snapshot recomputed after it arrived (the exports would need a recorded-at column to tell).",
        "No statistic over the data (a cap, a quantile) is computed across",
        "snapshots: the only thresholds are fixed configuration. An export that holds only an order's final",
        "state makes the order unknown until that state's `updated_at`; export every change (a change log) to",
        "see orders from the day they were placed.",
        "",
        "| group | reads, as of S |",
        "|---|---|",
        *[f"| {group} | {rule} |" for group, rule in POINT_IN_TIME.items()],
        "",
        "## Features",
        "",
        "| feature | group | window | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{d.name}` | {d.group} | {d.window} | {d.meaning} |" for d in defs]
    return "\n".join(lines) + "\n"

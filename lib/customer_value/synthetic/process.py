"""The generative process, for one block of customers at a time (pure numpy/pandas, no Spark, no I/O).

Per customer: a daily purchase rate (Gamma), a dropout probability after each completed order (Beta), a
spend scale (Gamma-Gamma), an engagement level and a satisfaction level. Purchases are Poisson per day,
modulated by seasonality; a customer drops out after their G-th completed order, G ~ Geometric(p). Sessions
and events follow engagement, rise in the days before a purchase and fade after dropout; reviews follow
satisfaction and are worse for the order after which the customer left. See docs/data.md.

Determinism: everything in a block is drawn from one generator seeded by (seed, block), so a block's output
depends only on the configuration and its number, never on how blocks are spread over Spark tasks.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from customer_value.config import SyntheticConfig
from customer_value.schemas import RAW_SOURCES
from customer_value.synthetic.calendar import day_numbers, season_weights

FIRST_NAMES = ["Anna", "Jonas", "Léa", "Mats", "Zoë", "Sofía", "Björn", "Inès", "Noah", "Emma", "Jörg", "Chloé",
               "Liam", "Maëlle", "Øystein", "Åsa", "Luca", "Marta", "José", "Nora", "Ana", "Hugo", "Elif", "Tomás"]
LAST_NAMES = ["Müller", "García", "Dubois", "Rossi", "Nowak", "Jensen", "Smith", "Peña", "Søndergaard", "Öztürk",
              "Martin", "Costa", "Larsen", "Fernández", "Weiß", "Novák", "Brown", "Lefèvre", "Silva", "Kowalski"]
CITIES = ["Berlin", "Madrid", "Paris", "Milano", "Kraków", "København", "London", "Zürich", "Lisboa", "Wien",
          "Hamburg", "Lyon", "Sevilla", "Göteborg", "Porto", "Bruxelles", "Dublin", "Praha", "Malmö", "Köln"]
CHANNELS = ["organic", "paid_search", "social", "referral", "email", "affiliate"]
CHANNEL_P = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]
PAYMENTS = ["card", "paypal", "invoice", "voucher"]
PAYMENT_P = [0.5, 0.3, 0.15, 0.05]
GENDERS = ["f", "m", "d", ""]
GENDER_P = [0.48, 0.46, 0.02, 0.04]
REVIEW_TEXT = {
    1: ["Terrible, broke after a day.", "Never again, awful service.", "Très mauvais. Refund took weeks.",
        "Complete waste of money."],
    2: ["Disappointing quality.", "Arrived late and damaged.", "Not as described, meh.",
        "Schlechte Qualität, leider."],
    3: ["It is okay.", "Average product, fair price.", "Does the job, nothing special.", "Correct, sans plus."],
    4: ["Good value, happy with it.", "Nice quality, quick delivery.", "Works well, would buy again.",
        "Sehr gut verpackt."],
    5: ["Excellent! Love it.", "Perfect, exceeded expectations.", "Fantastic service, highly recommend.",
        "Génial, parfait !"],
}

USER_COLUMNS = RAW_SOURCES["users"].names
ORDER_COLUMNS = RAW_SOURCES["orders"].names
ITEM_COLUMNS = RAW_SOURCES["order_items"].names
EVENT_COLUMNS = RAW_SOURCES["events"].names
REVIEW_COLUMNS = RAW_SOURCES["reviews"].names


def user_id(index: np.ndarray | int) -> np.ndarray | str:
    """The shop's raw customer id for customer number `index`."""
    if np.isscalar(index):
        return f"u{int(index):07d}"
    return np.char.add("u", np.char.zfill(np.asarray(index).astype(str), 7))


@dataclass
class Block:
    """One block's customers: latent truth and the clean exports, all columns as the export writes them."""

    truth: pd.DataFrame
    users: pd.DataFrame
    orders: pd.DataFrame
    order_items: pd.DataFrame
    events: pd.DataFrame
    reviews: pd.DataFrame


def _ts(epoch_day: np.ndarray, seconds: np.ndarray, iso: bool) -> np.ndarray:
    """`YYYY-MM-DD HH:MM:SS` (CSV exports) or `YYYY-MM-DDTHH:MM:SSZ` (JSON events)."""
    stamps = (epoch_day.astype("int64") * 86400 + seconds.astype("int64")).astype("datetime64[s]")
    text = np.datetime_as_string(stamps, unit="s")
    return np.char.add(text, "Z") if iso else np.char.replace(text, "T", " ")


def _date(epoch_day: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(epoch_day))


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _money(x: np.ndarray) -> np.ndarray:
    return np.char.mod("%.2f", np.round(x, 2))


def simulate_block(cfg: SyntheticConfig, block: int) -> Block:
    """Customers [block * per_file, ...) of the shop, drawn from the generative process."""
    rng = np.random.default_rng([cfg.seed, block])
    first = block * cfg.customers_per_file
    n = max(0, min(cfg.customers_per_file, cfg.customers - first))
    days = (cfg.export_date - cfg.shop_opened).days + 1
    opened = int(day_numbers(cfg.shop_opened, 1)[0])
    idx = first + np.arange(n)
    ids = user_id(idx)

    # Latent parameters.
    signup = rng.integers(0, days - 30, n)
    lam = rng.gamma(cfg.purchase_rate.r, 1.0 / cfg.purchase_rate.alpha, n)
    p_drop = rng.beta(cfg.dropout.a, cfg.dropout.b, n)
    nu = rng.gamma(cfg.spend.q, 1.0 / cfg.spend.gamma, n)
    engagement = rng.gamma(2.0, cfg.engagement.sessions_per_day / 2.0, n) * (0.5 + 10 * lam)
    until_dropout = rng.geometric(np.clip(p_drop, 1e-6, 1.0))
    mean_rating = np.clip(4.5 - 8.0 * p_drop + rng.normal(0, 0.35, n), 1.0, 5.0)
    favourite_cat = rng.integers(0, len(cfg.categories), n)

    # Orders: Poisson per day, seasonal, from signup on; statuses; dropout after the G-th completed order.
    weights = season_weights(cfg.seasonality, cfg.shop_opened, days)
    day = np.arange(days)
    mu = lam[:, None] * weights[None, :] * (day[None, :] >= signup[:, None])
    counts = rng.poisson(mu)
    cust, oday = np.nonzero(counts)
    reps = counts[cust, oday]
    cust, oday = np.repeat(cust, reps), np.repeat(oday, reps)
    n_orders = len(cust)
    u = rng.random(n_orders)
    status = np.where(u < cfg.cancel_rate, "cancelled",
                      np.where(u < cfg.cancel_rate + cfg.return_rate, "returned", "completed"))
    completed = status == "completed"
    # completed orders strictly before each order, within its customer (orders are sorted by customer, day)
    cum = np.cumsum(completed)
    starts = np.searchsorted(cust, cust, side="left")
    before = cum - completed - np.where(starts > 0, cum[starts - 1], 0)
    keep = before < until_dropout[cust]
    cust, oday, status, completed = cust[keep], oday[keep], status[keep], completed[keep]
    last = completed & (before[keep] == until_dropout[cust] - 1)
    dropout_day = np.full(n, -1)
    dropout_day[cust[last]] = oday[last]
    n_orders = len(cust)

    # ids carry the block and a running number, never the customer's number (they reach silver)
    order_ids = np.char.add(f"o{block:05d}-", np.char.zfill(rng.permutation(n_orders).astype(str), 7))
    order_sec = rng.integers(7 * 3600, 24 * 3600, n_orders)
    order_epoch = opened + oday
    net = np.maximum(np.round(rng.gamma(cfg.spend.p, 1.0 / nu[cust]), 2), 1.0)
    discounted = rng.random(n_orders) < cfg.discount_rate
    disc_frac = np.where(discounted, rng.uniform(0.05, 0.3, n_orders), 0.0)
    gross_target = net / (1.0 - disc_frac)

    # Items: 1 + Poisson(1) lines per order (at most 6), gross split by a Dirichlet draw.
    n_items = np.minimum(1 + rng.poisson(1.0, n_orders), 6)
    item_order = np.repeat(np.arange(n_orders), n_items)
    share = rng.gamma(1.0, 1.0, len(item_order))
    share /= np.bincount(item_order, share, n_orders)[item_order]
    qty = 1 + rng.poisson(0.3, len(item_order))
    unit_price = np.maximum(np.round(gross_target[item_order] * share / qty, 2), 0.01)
    cat = np.where(rng.random(len(item_order)) < 0.6, favourite_cat[cust[item_order]],
                   rng.integers(0, len(cfg.categories), len(item_order)))
    product = np.char.add(np.char.add("p", cat.astype(str)), np.char.zfill(rng.integers(0, 500, len(item_order)).astype(str), 4))
    gross = np.bincount(item_order, qty * unit_price, n_orders)
    discount = np.where(discounted, np.round(np.maximum(gross - net, 0.0), 2), 0.0)
    total = np.round(gross - discount, 2)
    updated_sec = order_sec + np.where(status == "returned", rng.integers(5, 25, n_orders) * 86400,
                                       rng.integers(60, 3600, n_orders))

    orders = pd.DataFrame({
        "order_id": order_ids,
        "user_id": ids[cust],
        "order_ts": _ts(order_epoch, order_sec, iso=False),
        "updated_at": _ts(order_epoch, updated_sec, iso=False),
        "status": status,
        "payment_method": rng.choice(PAYMENTS, n_orders, p=PAYMENT_P),
        "discount": _money(discount),
        "total": _money(total),
    })
    items = pd.DataFrame({
        "order_id": order_ids[item_order],
        "product_id": product,
        "category": np.asarray(cfg.categories)[cat],
        "quantity": qty.astype(str),
        "unit_price": _money(unit_price),
    })

    # Sessions and events: engagement x (boost before a purchase, fade after dropout).
    has_order = np.zeros((n, days + cfg.engagement.pre_purchase_days + 1), dtype=np.int32)
    np.add.at(has_order, (cust, oday), 1)
    csum = np.cumsum(has_order > 0, axis=1)
    k = cfg.engagement.pre_purchase_days
    soon = (csum[:, k:k + days] - np.concatenate([np.zeros((n, 1), np.int64), csum[:, : days - 1]], axis=1)) > 0
    since_drop = day[None, :] - dropout_day[:, None]
    dropped = (dropout_day[:, None] >= 0) & (since_drop > 0)
    intensity = np.where(dropped, cfg.engagement.after_dropout * np.exp(-since_drop / 30.0),
                         1.0 + cfg.engagement.pre_purchase_boost * soon)
    intensity = intensity * (day[None, :] >= signup[:, None])
    sessions = rng.poisson(engagement[:, None] * intensity)
    s_cust, s_day = np.nonzero(sessions)
    s_reps = sessions[s_cust, s_day]
    s_cust, s_day = np.repeat(s_cust, s_reps), np.repeat(s_day, s_reps)
    s_pre = soon[s_cust, s_day]
    n_sess = len(s_cust)
    per_type = {
        "login": np.ones(n_sess, dtype=np.int64),
        "page_view": 1 + rng.poisson(2.0 + 2.0 * s_pre),
        "search": rng.poisson(0.8, n_sess),
        "favourite": rng.poisson(0.1 + 0.4 * s_pre),
        "cart_add": rng.poisson(0.15 + 1.2 * s_pre),
    }
    types = np.concatenate([np.full(c.sum(), t) for t, c in per_type.items()])
    e_sess = np.concatenate([np.repeat(np.arange(n_sess), c) for c in per_type.values()])
    session_start = rng.integers(6 * 3600, 23 * 3600, n_sess)
    # each event gets its own 20-second slot in its session: no two events of a session are identical
    by_session = np.argsort(e_sess, kind="stable")
    rank = np.empty(len(e_sess), dtype=np.int64)
    rank[by_session] = np.arange(len(e_sess)) - np.searchsorted(e_sess[by_session], e_sess[by_session])
    e_sec = session_start[e_sess] + 20 * rank + rng.integers(0, 20, len(e_sess))
    with_product = np.isin(types, ["page_view", "favourite", "cart_add"])
    e_cat = np.where(rng.random(len(e_sess)) < 0.6, favourite_cat[s_cust[e_sess]],
                     rng.integers(0, len(cfg.categories), len(e_sess)))
    e_product = np.where(with_product, np.char.add(np.char.add("p", e_cat.astype(str)),
                         np.char.zfill(rng.integers(0, 500, len(e_sess)).astype(str), 4)), None)
    session_ids = np.char.add(f"s{block:05d}-", rng.permutation(n_sess).astype(str))

    # Reviews of completed orders, some days later; worse for the order after which the customer left.
    reviewed = completed & (rng.random(n_orders) < cfg.review_rate)
    r_idx = np.nonzero(reviewed)[0]
    r_day = oday[r_idx] + rng.integers(2, 15, len(r_idx))
    in_range = r_day < days
    r_idx, r_day = r_idx[in_range], r_day[in_range]
    r_mean = mean_rating[cust[r_idx]] - 2.0 * last[r_idx]
    rating = np.clip(np.rint(r_mean + rng.normal(0, 0.7, len(r_idx))), 1, 5).astype(int)
    body = np.array([REVIEW_TEXT[r][j] for r, j in zip(rating, rng.integers(0, 4, len(r_idx)))], dtype=object)
    first_item = np.searchsorted(item_order, r_idx)
    r_sec = rng.integers(8 * 3600, 23 * 3600, len(r_idx))
    review_ts = _ts(opened + r_day, r_sec, iso=True)
    reviews = pd.DataFrame({
        "review_id": np.char.add("r", order_ids[r_idx]),
        "user_id": ids[cust[r_idx]],
        "order_id": order_ids[r_idx],
        "product_id": product[first_item],
        "review_ts": review_ts,
        "rating": rating,
        "body": body,
        "updated_at": review_ts,
    })

    events = pd.DataFrame({
        "user_id": np.concatenate([ids[s_cust[e_sess]], reviews["user_id"].to_numpy()]),
        "event_ts": np.concatenate([_ts(opened + s_day[e_sess], e_sec, iso=True), review_ts]),
        "event_type": np.concatenate([types, np.full(len(r_idx), "review")]),
        "product_id": np.concatenate([e_product, reviews["product_id"].to_numpy()]),
        "session_id": np.concatenate([session_ids[e_sess], np.full(len(r_idx), None)]),
    })
    events = events.sort_values(["user_id", "event_ts"], kind="stable", ignore_index=True)

    # Users: personal data the shop holds (fake, but shaped like the real thing).
    first_names = rng.choice(FIRST_NAMES, n)
    last_names = rng.choice(LAST_NAMES, n)
    names = np.char.add(np.char.add(first_names.astype(str), " "), last_names.astype(str))
    emails = np.array([f"{_ascii(f)}.{_ascii(l)}{i}@example.com" for f, l, i in zip(first_names, last_names, idx)])
    phones = np.array([f"+49 1{a:02d} {b:07d}" for a, b in zip(rng.integers(50, 80, n), rng.integers(0, 10**7, n))])
    birth = opened - 365 * rng.integers(18, 80, n) - rng.integers(0, 365, n)
    users = pd.DataFrame({
        "user_id": ids,
        "name": names,
        "email": emails,
        "phone": phones,
        "birth_date": pd.to_datetime(birth.astype("datetime64[D]")).strftime("%Y-%m-%d").to_numpy(),
        "gender": rng.choice(GENDERS, n, p=GENDER_P),
        "city": rng.choice(CITIES, n),
        "signup_date": pd.to_datetime((opened + signup).astype("datetime64[D]")).strftime("%Y-%m-%d").to_numpy(),
        "acquisition_channel": rng.choice(CHANNELS, n, p=CHANNEL_P),
        "updated_at": _ts(opened + signup, rng.integers(6 * 3600, 23 * 3600, n), iso=False),
    })

    truth = pd.DataFrame({
        "user_id": ids,
        "block": np.full(n, block, dtype=np.int32),
        "signup_date": [_date(opened + d) for d in signup],
        "purchase_rate": lam,
        "dropout_prob": p_drop,
        "spend_nu": nu,
        "spend_p": np.full(n, cfg.spend.p),
        "engagement": engagement,
        "mean_rating": mean_rating,
        "orders_until_dropout": until_dropout.astype(np.int64),
        "dropout_date": [_date(opened + d) if d >= 0 else None for d in dropout_day],
    })
    orders, users = _with_histories(cfg, rng, orders, users, signup, days)
    return Block(truth=truth, users=users, orders=orders, order_items=items, events=events, reviews=reviews)


def _interleave(rows: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """`earlier` versions placed right before the rows (same index) they precede, as a change log has them."""
    return pd.concat([earlier, rows]).sort_index(kind="stable").reset_index(drop=True)


def _with_histories(cfg: SyntheticConfig, rng: np.random.Generator, orders: pd.DataFrame, users: pd.DataFrame,
                    signup: np.ndarray, days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The exports as change logs: every state a row had, each with the `updated_at` it was recorded at.

    A returned order was first exported as completed, minutes after it was placed, and again as returned when it
    came back; a share of customers edit their profile later (they move: a new city). Drawn last in the block,
    so the shop itself is the same with or without its histories."""
    returned = orders.index[orders["status"].to_numpy() == "returned"]
    placed = orders.loc[returned].copy()
    placed_at = pd.to_datetime(placed["order_ts"]) + pd.to_timedelta(rng.integers(60, 3600, len(placed)), unit="s")
    placed["status"] = "completed"
    placed["updated_at"] = placed_at.dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    edited = np.nonzero(rng.random(len(users)) < cfg.profile_edit_rate)[0]
    edited = edited[signup[edited] < days - 2]
    later = users.iloc[edited].copy()
    moved_day = signup[edited] + rng.integers(1, np.maximum(days - 1 - signup[edited], 2))
    opened = int(day_numbers(cfg.shop_opened, 1)[0])
    current_city = np.array([CITIES.index(c) for c in later["city"]], dtype=np.int64)
    later["city"] = np.asarray(CITIES)[(current_city + rng.integers(1, len(CITIES), len(edited))) % len(CITIES)]
    later["updated_at"] = _ts(opened + moved_day, rng.integers(6 * 3600, 23 * 3600, len(edited)), iso=False)
    users_log = pd.concat([users, later]).sort_index(kind="stable").reset_index(drop=True)
    return _interleave(orders, placed), users_log


def block_count(cfg: SyntheticConfig) -> int:
    return -(-cfg.customers // cfg.customers_per_file)

"""The example application of ``kit demo``: an order pipeline whose steps leave visible side effects.

Every step appends one line to a ledger file (``KIT_DEMO_LEDGER``) *outside* the database, the way a
real side effect (a card charge, an e-mail) happens outside it. The demo reads the ledger afterwards to
prove that no step whose checkpoint committed ever ran again.
"""

from __future__ import annotations

import json
import os
import time
import zlib

import kit
from kit.engine import current_context

app = kit.Kit()

STEP_SECONDS = float(os.environ.get("KIT_DEMO_STEP_SECONDS", "0.25"))
STEPS = ("reserve_inventory", "charge_card", "pack_parcel", "ship_parcel", "email_customer")


def _side_effect(order_id: str, action: str, detail: str) -> None:
    """Append what happened to the ledger (one line, atomic append), then keep working a while: a
    crash during that time leaves a side effect whose checkpoint never committed."""
    ctx = current_context()
    info = kit.step_info()
    line = json.dumps({
        "order": order_id, "step": action, "step_id": info.step_id if info else None,
        "epoch": ctx.epoch if ctx else None, "pid": os.getpid(), "detail": detail, "at": time.time(),
    })
    path = os.environ.get("KIT_DEMO_LEDGER")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    time.sleep(STEP_SECONDS)


@app.step()
def reserve_inventory(order_id: str, items: list) -> str:
    _side_effect(order_id, "reserve_inventory", f"{len(items)} item(s)")
    return f"resv-{order_id}"


@app.step(retries=3, initial_delay=0.1)
def charge_card(order_id: str, amount_cents: int) -> str:
    _side_effect(order_id, "charge_card", f"{amount_cents / 100:.2f} EUR")
    return f"pay-{order_id}"


@app.step()
def pack_parcel(order_id: str, reservation: str) -> str:
    _side_effect(order_id, "pack_parcel", reservation)
    return f"parcel-{order_id}"


@app.step()
def ship_parcel(order_id: str, parcel: str) -> str:
    _side_effect(order_id, "ship_parcel", parcel)
    return f"TRACK{zlib.crc32(order_id.encode()) % 10**8:08d}"


@app.step()
def email_customer(order_id: str, tracking: str) -> bool:
    _side_effect(order_id, "email_customer", tracking)
    return True


@app.workflow(name="process_order")
def process_order(order_id: str, items: list, amount_cents: int) -> dict:
    reservation = reserve_inventory(order_id, items)
    payment = charge_card(order_id, amount_cents)
    parcel = pack_parcel(order_id, reservation)
    tracking = ship_parcel(order_id, parcel)
    email_customer(order_id, tracking)
    return {"order": order_id, "payment": payment, "tracking": tracking}

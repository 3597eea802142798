"""A minimal kit app for the secrets tests: ``kit worker tests.apps.secrets_app:app`` (configured by KIT_*)."""

from __future__ import annotations

import kit

app = kit.Kit()


@app.step(name="secrets.upper")
def upper(text: str) -> str:
    return text.upper()


@app.workflow(name="secrets.shout")
def shout(text: str) -> str:
    return upper(text)

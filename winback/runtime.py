"""What every entry point shares: settings, the database engine and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from winback.apikeys import KeyVerifier
from winback.db.engine import make_engine
from winback.kernel.clock import Clock, SystemClock
from winback.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    clock: Clock
    keys: KeyVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyVerifier(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or Settings()  # read afresh: environment and file
        return cls(settings=settings, engine=make_engine(settings.database_url), clock=clock or SystemClock())

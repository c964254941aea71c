"""One typed settings object, read from WINBACK_* environment variables and an optional TOML file.

Precedence (highest first): environment variables, the settings file (`WINBACK_SETTINGS_FILE`,
default `./winback.toml` when present), built-in defaults. The store profile set through the admin
API (`PUT /api/v1/store`) is kept in the database and overrides the `store_*` values here.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite:///./winback.db"
DEFAULT_SETTINGS_FILE = "winback.toml"


class StoreProfile(BaseModel):
    """What messages and relative times need to know about the shop."""

    model_config = {"extra": "forbid"}

    name: str = "My Store"
    url: str = "http://localhost:8000"
    timezone: str = "UTC"
    currency: str = "USD"
    locale: str = "en-US"
    support_email: str | None = None
    support_phone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/Berlin')") from exc
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if len(value) != 3 or not value.isalpha():
            raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {value!r}")
        return value.upper()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WINBACK_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL

    # Store profile defaults (the admin API can override them at run time).
    store_name: str = "My Store"
    store_url: str = "http://localhost:8000"
    store_timezone: str = "UTC"
    store_currency: str = "USD"
    store_locale: str = "en-US"
    store_support_email: str | None = None
    store_support_phone: str | None = None

    # Shopify webhook shared secret; without it /webhooks/shopify refuses every call.
    shopify_webhook_secret: str | None = None

    # Ingestion limits from the Segment HTTP tracking API spec.
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024

    # Derived lifecycle events.
    checkout_abandoned_after_s: float = Field(
        default=60 * 60, description="seconds without checkout activity"
    )
    browse_abandoned_after_s: float = Field(
        default=60 * 60, description="seconds after the last view with no cart add"
    )
    browse_min_views: int = Field(
        default=2, description="views of one product/category that count as interest"
    )
    browse_min_dwell_s: float = Field(
        default=30, description="seconds on one product page that count as interest"
    )
    search_abandoned_after_s: float = Field(
        default=60 * 60, description="seconds after a search with no cart add/order"
    )

    # Segments whose rules change with time alone ("not ordered for 90 days") are re-evaluated
    # once this long has passed since their last evaluation.
    segment_recheck_s: float = Field(
        default=60 * 60, gt=0, description="seconds between re-checks of time-based segments"
    )

    # Worker loops.
    worker_poll_s: float = 0.5
    worker_lease_s: float = 30.0
    # An event that happened longer ago than this when it is applied starts no flow run: imported
    # history, a client that was offline for days, a checkout abandoned long before it was seen.
    flow_trigger_max_age_h: float = Field(default=48, gt=0)
    process_batch_size: int = 1000  # events per transaction: bigger batches share fixed costs

    cors_origins: list[str] = ["*"]

    # --- messaging (docs/messaging.md) ---
    # The address shoppers reach winback at: tracked links, open pixels, unsubscribe pages, MMS
    # media and provider callbacks are built from it.
    public_url: str = "http://localhost:8000"
    # Where each channel goes: `outbox` keeps messages in winback only (GET /api/v1/messages),
    # `console` also prints them to the log, the others call the real provider.
    sms_provider: Literal["outbox", "console", "twilio"] = "outbox"
    email_provider: Literal["outbox", "console", "smtp"] = "outbox"
    push_provider: Literal["outbox", "console", "webpush"] = "outbox"
    slack_provider: Literal["outbox", "console", "slack"] = "outbox"
    webhook_provider: Literal["outbox", "console", "http"] = "http"
    meta_provider: Literal["outbox", "console", "meta"] = "outbox"

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None  # E.164 sender, or …
    twilio_messaging_service_sid: str | None = None  # … a messaging service (one of the two)
    twilio_base_url: str = "https://api.twilio.com"
    sms_price_per_part: Decimal = Field(default=Decimal("0.0079"), ge=0)  # cost estimate, store currency
    mms_price: Decimal = Field(default=Decimal("0.0200"), ge=0)
    sms_help_text: str | None = None  # reply to HELP; default names the shop and its support contact
    # Who answers STOP/START/HELP: `auto` leaves it to Twilio where Twilio answers them itself (long
    # codes, toll-free numbers) and answers on short codes, so a shopper never gets two replies.
    sms_keyword_replies: Literal["auto", "always", "never"] = "auto"

    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 30.0
    email_from: str = "shop@localhost"  # "Shop Name <hello@shop.example>" allowed
    email_reply_to: str | None = None

    vapid_subject: str | None = None  # mailto: or https: contact for push services; default support email
    slack_webhook_url: str | None = None
    webhook_signing_secret: str | None = None  # HMAC-SHA256 of each webhook body, X-Winback-Signature
    webhook_timeout_s: float = 10.0
    meta_access_token: str | None = None
    meta_base_url: str = "https://graph.facebook.com/v21.0"
    shopify_shop_domain: str | None = None  # e.g. my-shop.myshopify.com: discount codes are pushed there
    shopify_admin_token: str | None = None
    shopify_admin_base_url: str | None = None  # default https://{shop domain}/admin/api/2024-10

    # Quiet hours for marketing SMS, in the recipient's local time: "HH:MM-HH:MM" when sending
    # is allowed; overrides by country ("US") or region ("US-TX", "CA-QC").
    quiet_hours_window: str = "08:00-21:00"
    quiet_hours_overrides: dict[str, str] = {}
    # Frequency caps across flows (marketing only): "channel[:category]" → "count/hours".
    frequency_caps: dict[str, str] = {"sms": "1/24", "sms:cart_recovery": "1/48", "email": "3/24"}
    # Sending pace per provider or "provider:sender": messages (SMS: parts) per second; 0 = no limit.
    send_rates: dict[str, float] = {"twilio": 1.0, "smtp": 20.0, "webpush": 50.0}
    send_max_attempts: int = Field(default=8, ge=1)
    send_batch_size: int = Field(default=200, ge=1)
    attribution_window_days: int = Field(default=5, ge=1)  # orders counted as converted by a message

    @model_validator(mode="after")
    def _valid_messaging_policies(self) -> Settings:
        """Quiet hours, caps and send rates are read when the first message is sent; a typo must
        stop the process at start, naming the setting."""
        from winback.messaging.caps import parse_caps
        from winback.messaging.pacing import Pacers
        from winback.messaging.quiet_hours import QuietHours

        for name, check in (
            ("WINBACK_QUIET_HOURS_WINDOW / WINBACK_QUIET_HOURS_OVERRIDES",
             lambda: QuietHours.from_settings(self.quiet_hours_window, self.quiet_hours_overrides)),
            ("WINBACK_FREQUENCY_CAPS", lambda: parse_caps(self.frequency_caps)),
            ("WINBACK_SEND_RATES", lambda: Pacers(self.send_rates)),
        ):  # fmt: skip
            try:
                check()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _valid_store_profile(self) -> Settings:
        try:
            self.store_profile()
        except ValidationError as exc:
            problems = "; ".join(
                f"WINBACK_STORE_{e['loc'][0]}".upper() + f": {e['msg']}" for e in exc.errors()
            )
            raise ValueError(problems) from None
        return self

    def store_profile(self) -> StoreProfile:
        return StoreProfile(
            name=self.store_name,
            url=self.store_url,
            timezone=self.store_timezone,
            currency=self.store_currency,
            locale=self.store_locale,
            support_email=self.store_support_email,
            support_phone=self.store_support_phone,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = Path(os.environ.get("WINBACK_SETTINGS_FILE", DEFAULT_SETTINGS_FILE))
        if settings_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=settings_file))
        elif "WINBACK_SETTINGS_FILE" in os.environ:
            raise FileNotFoundError(f"WINBACK_SETTINGS_FILE points at {settings_file}, which does not exist")
        return tuple(sources)

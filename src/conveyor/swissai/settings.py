"""`CONVEYOR_SWISSAI_*` settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SwissAISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_SWISSAI_", extra="ignore")

    engine_urls: str = Field("", description="Comma-separated core engine URLs to announce to.")
    service_url: str | None = Field(
        None, description="This server's public base URL, as the engine reaches it."
    )
    max_tasks: int = Field(50, ge=1, description="Tasks waiting or running per service: 503 past.")
    ping_s: float = Field(20.0, gt=0, description="Heartbeat to the engines.")
    announce_retries: int = Field(5, ge=1, description="Tries per engine call before giving up.")
    retry_delay_s: float = Field(3.0, ge=0, description="Pause between those tries.")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of each call to an engine.")

    @property
    def engines(self) -> list[str]:
        raw = self.engine_urls.strip().strip("[]")
        return [u.strip().strip("'\"").rstrip("/") for u in raw.split(",") if u.strip()]

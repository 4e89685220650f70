"""The browser fixture of the dashboard tests (Playwright + the machine's Chromium), for the sign-in tests here."""

from tests.dashboard.test_dashboard_browser import chromium

__all__ = ["chromium"]

"""EmailChannel and its mailer against a real SMTP server (aiosmtpd), without a gateway around them."""

from __future__ import annotations

import logging
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from bots.email import plugin as email_plugin
from bots.email.channel import EmailChannel
from bots.email.links import LinkSigner
from bots.email.mailer import Mailer, SmtpConfig
from bots.email.settings import EmailSettings
from service.approvals.schemas import ApproverView, DecisionView, ExecutionView, VoteView
from service.settings import Settings
from tests.email.support import SECRET, SENDER, SmtpSink, email_settings, subject

ALICE, BOB = "alice@example.com", "bob@example.com"


def view(**changes) -> DecisionView:
    base = {
        "id": "d_test123",
        "status": "pending",
        "server": "jobs",
        "tool": "cancel-async-job",
        "grant": "agent",
        "arguments": {"jobId": "job-1"},
        "args_sha256": "0" * 64,
        "policy_version": "v1",
        "rule": "cancel-async-job",
        "rule_reason": "cancelling loses work",
        "approvers": ["alice", "bob", "carol"],
        "approver_details": [
            ApproverView(name="alice", emails=[ALICE]),
            ApproverView(name="bob", emails=[BOB, "BOB@example.com"]),
            ApproverView(name="carol", slack_ids=["U0CAROL"]),
        ],
        "quorum": 1,
        "channels": ["email"],
        "on_timeout": "deny",
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:15:00Z",
        "released": False,
    }
    return DecisionView(**{**base, **changes})


def channel(port: int, url: str | None = None) -> EmailChannel:
    return EmailChannel(
        Mailer(SmtpConfig.from_url(url or f"smtp://127.0.0.1:{port}")),
        LinkSigner(SECRET),
        sender=SENDER,
        public_url="https://holdgate.example/",
    )


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def test_smtp_urls():
    plain = SmtpConfig.from_url("smtp://mail.example")
    assert (plain.hostname, plain.port, plain.use_tls, plain.starttls, plain.username) == (
        "mail.example",
        25,
        False,
        "auto",
        None,
    )
    login = SmtpConfig.from_url("smtp://me%40example.com:p%3Ass@mail.example:587")
    assert (login.username, login.password, login.port, login.starttls) == ("me@example.com", "p:ss", 587, "require")
    assert "p:ss" not in login.describe() and "me@example.com" in login.describe()
    tls = SmtpConfig.from_url("smtps://u:p@mail.example?timeout=5")
    assert (tls.port, tls.use_tls, tls.starttls, tls.timeout) == (465, True, "off", 5.0)
    assert SmtpConfig.from_url("smtp://u:p@relay.local?starttls=off").starttls == "off"
    for bad in ("http://mail.example", "smtp://", "smtp://mail.example?starttls=maybe", "smtp://h:notaport"):
        with pytest.raises(ValueError):
            SmtpConfig.from_url(bad)


def test_settings_refuse_email_without_public_url_sender_or_a_real_key():
    """The email plug-in refuses to build (start-up refuses) a half-configured channel, naming what to fix."""

    def build(smtp_url: str = "smtp://127.0.0.1:2525", email_from: str | None = SENDER, **service: Any):
        email = EmailSettings(_env_file=None, smtp_url=smtp_url, email_from=email_from)
        good = {"public_url": "http://127.0.0.1:8000", "secret_key": SECRET}
        return email_plugin.build(Settings(_env_file=None, channel_settings={"email": email}, **{**good, **service}))

    assert isinstance(build(), EmailChannel)
    assert (
        email_plugin.build(Settings(_env_file=None, channel_settings={"email": EmailSettings(_env_file=None)})) is None
    )
    for missing, variable in (
        ({"public_url": None}, "HOLDGATE_PUBLIC_URL"),
        ({"email_from": None}, "HOLDGATE_EMAIL_FROM"),
        ({"secret_key": None}, "HOLDGATE_SECRET_KEY"),
    ):
        with pytest.raises(ValueError, match=variable) as refused:
            build(**missing)
        assert SECRET not in str(refused.value), "secrets never appear in the error"
    with pytest.raises(ValueError, match="HOLDGATE_SECRET_KEY"):
        build(secret_key="changethis")
    with pytest.raises(ValueError, match="smtps://"):
        build(smtp_url="http://mail.example")
    with pytest.raises(ValueError, match="HOLDGATE_PUBLIC_URL"):
        EmailChannel.from_settings(Settings(_env_file=None, **{**email_settings(2525, 8000), "public_url": None}))


async def test_request_goes_to_every_address_once_with_its_own_links(smtp):
    ref = await channel(smtp.port).deliver("request", view(), None)
    mails = await smtp.wait_for(2)

    assert ref == "d_test123@gateway.example"
    assert sorted(m.rcpt_tos[0] for m in mails) == [ALICE, BOB], "carol has no address; BOB@ is bob@ again"
    for mail in mails:
        links = mail.links()
        assert links["approve"].startswith("https://holdgate.example/email/decide/")
        claim = LinkSigner(SECRET).verify(links["approve"].rsplit("/", 1)[1])
        assert (claim.decision_id, claim.address, claim.action) == ("d_test123", mail.rcpt_tos[0], "approve")
        assert LinkSigner(SECRET).verify(links["deny"].rsplit("/", 1)[1]).action == "deny"
        assert "cancelling loses work" in mail.text and "cancelling loses work" in mail.html
        assert mail.message["In-Reply-To"] is None
        page = "https://holdgate.example/decisions/d_test123"  # the dashboard asks for sign-in (token or SSO) first
        assert f"(sign in first): {page}" in mail.text and f'href="{page}"' in mail.html


async def test_sending_again_reuses_the_message_ids(smtp):
    email = channel(smtp.port)
    await email.deliver("request", view(), None)
    await email.deliver("request", view(), None)  # the outbox retrying after a lost acknowledgement
    mails = await smtp.wait_for(4)
    assert len({m.message["Message-ID"] for m in mails}) == 2


async def test_reminder_goes_to_those_who_have_not_voted_in_the_thread(smtp):
    email = channel(smtp.port)
    ref = await email.deliver("request", view(quorum=2), None)
    voted = view(quorum=2, votes=[VoteView(approver="alice", value="approve", via="email", at="2026-01-01T00:01:00Z")])
    await email.deliver("reminder", voted, ref)
    requests = await smtp.wait_for(2, lambda m: m.message["In-Reply-To"] is None)
    [reminder] = await smtp.wait_for(1, lambda m: m.message["In-Reply-To"] is not None)

    assert reminder.rcpt_tos == [BOB]
    [bobs_request] = [m for m in requests if m.rcpt_tos == [BOB]]
    assert reminder.message["In-Reply-To"] == bobs_request.message["Message-ID"]
    assert reminder.text.startswith("Reminder:") and reminder.links()["approve"]
    assert subject(reminder) == "Re: " + subject(bobs_request)


async def test_follow_up_says_how_it_ended_in_the_thread(smtp):
    email = channel(smtp.port)
    ref = await email.deliver("request", view(), None)
    ended = view(
        status="approved",
        decided_by="timeout",
        decided_via="timeout",
        on_timeout="approve",
        execution=ExecutionView(outcome="ok"),
    )
    await email.deliver("update", ended, ref)
    followups = await smtp.wait_for(2, lambda m: m.message["In-Reply-To"] is not None)
    for followup in followups:
        assert "Approved automatically: nobody decided by 2099-01-01T00:15:00Z" in followup.text
        assert "The released call finished: ok." in followup.text
        assert "<a " not in followup.html, "no links in a follow-up"


async def test_nothing_is_mailed_for_what_nobody_can_act_on(smtp):
    email = channel(smtp.port)
    assert await email.deliver("request", view(status="denied", decided_by="bob"), None) is None
    assert await email.deliver("request", view(approver_details=[ApproverView(name="carol")]), None) is None
    own = view(grant="dave", approver_details=[ApproverView(name="dave", emails=["dave@example.com"])])
    assert await email.deliver("request", own, None) is None, "the calling grant cannot approve its own call"
    await email.deliver("update", view(status="expired"), None)  # the request was never mailed
    await email.deliver("reminder", view(status="approved", decided_by="alice"), "d_test123@gateway.example")
    assert smtp.received == []


async def test_names_from_upstreams_cannot_inject_headers(smtp):
    await channel(smtp.port).deliver("request", view(tool="evil\r\nBcc: mallory@example.com"), None)
    mails = await smtp.wait_for(2)
    assert all(m.rcpt_tos in ([ALICE], [BOB]) for m in mails)
    assert all(m.message["Bcc"] is None and "evil Bcc" in m.message["Subject"] for m in mails)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login_over_smtp_and_no_password_in_clear_unless_told():
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret:pw", handled=False)  # handled=False: send the 535

    sink = SmtpSink(authenticator=authenticator, auth_required=True, auth_require_tls=False).start()
    try:
        url = f"smtp://holdgate%40example.com:s3cret%3Apw@127.0.0.1:{sink.port}"
        with pytest.raises(aiosmtplib.SMTPException):
            await channel(sink.port, url).deliver("request", view(), None)  # the server offers no STARTTLS
        assert seen == [] and sink.received == []

        await channel(sink.port, url + "?starttls=off").deliver("request", view(), None)
        await sink.wait_for(2)
        assert seen == [(b"holdgate@example.com", b"s3cret:pw")]

        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await channel(sink.port, f"smtp://u:wrong@127.0.0.1:{sink.port}?starttls=off").deliver(
                "request", view(), None
            )
    finally:
        sink.stop()


class RefusingSink(SmtpSink):
    """Refuses bob for good (550) and carol for now (450)."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bob@"):
            return "550 5.1.1 no such user"
        if address.startswith("carol@"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_a_recipient_refused_for_good_is_skipped_and_one_refused_for_now_is_retried(caplog):
    sink = RefusingSink().start()
    try:
        email = channel(sink.port)
        await email.deliver("request", view(), None)
        assert [m.rcpt_tos for m in await sink.wait_for(1)] == [[ALICE]]
        assert "refused" in caplog.text and BOB in caplog.text

        busy = view(approver_details=[ApproverView(name="carol", emails=["carol@example.com"])])
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await email.deliver("request", busy, None)
    finally:
        sink.stop()


async def test_mail_server_down_raises_so_the_outbox_retries():
    from tests.support.harness import free_port

    with pytest.raises((aiosmtplib.SMTPConnectError, OSError)):
        await channel(free_port()).deliver("request", view(), None)


async def test_link_tokens_stay_out_of_the_access_log(smtp):
    await channel(smtp.port).start(approvals=None)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/email/decide/eyJkIjoi.secret-signature", "1.1", 200),
        None,
    )
    assert logging.getLogger("uvicorn.access").filter(record)
    assert record.getMessage() == '127.0.0.1:5555 - "GET /email/decide/… HTTP/1.1" 200'

"""The console's Starlette application: routes, page rendering, cookies and error pages."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import attrs
import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rulecrm.console import i18n
from rulecrm.console.params import BadInput
from rulecrm.console.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard, Refused
from rulecrm.errors import ExplainError, RulecrmError, StateError, StorageError
from rulecrm.masking import mask_personal

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "lang"
ONE_YEAR = 365 * 24 * 3600
log = logging.getLogger("rulecrm.console")


@attrs.frozen
class Console:
    """What every request handler needs: where the rules and the state are, the plugins, the guard."""

    rules_path: str
    state_path: str
    manager: object
    guard: Guard


def _masked(value):
    """Jinja's finalize: every value a template prints is masked as the logs are (phones, e-mails).

    Markup (HTML the console built itself, JSON for the charts, links) is left as it is; so are numbers.
    Anything else (a list or a mapping from a profile) is masked as the text it prints as.
    """
    if value is None or isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, (Markup, bool, int, float)):
        return value
    return mask_personal(value if isinstance(value, str) else str(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             finalize=_masked)
    env.globals["link"] = customer_link
    env.filters["json_text"] = lambda value: json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    # a dead letter's line as it came, in the editor a signed-in person fixes it in: it is
    # re-ingested as written, so it cannot be masked there
    env.filters["unmasked"] = lambda value: Markup.escape(value)
    return env


def customer_link(customer_id: str) -> Markup:
    """The customer's page; Markup, so that masking leaves a long numeric id intact in the link."""
    return Markup.escape(f"/customers/{quote(customer_id, safe='')}")


class Pages:
    """Renders a template with what every page shows (language, sign-in state, CSRF token)."""

    def __init__(self, console: Console):
        self.console = console
        self.env = _environment()

    def render(self, request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        language = i18n.pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                                      request.headers.get("accept-language"))
        csrf_cookie = request.cookies.get(CSRF_COOKIE) or self.console.guard.new_csrf_cookie()
        guard = self.console.guard
        html = self.env.get_template(name).render(
            t=i18n.Translator(language), lang=language, languages=i18n.LANGUAGE_NAMES,
            request=request, console=self.console, path=request.url.path,
            query=lambda **changes: _query(request, **changes),
            # after a POST (a change's result) the switch leads to the overview: the change is not redone
            lang_link=lambda code: (_query(request, lang=code) if request.method == "GET"
                                    else Markup("/?lang=") + code),
            writable=guard.writable, signed_in=guard.signed_in(request.cookies.get(SESSION_COOKIE)),
            csrf_field=CSRF_FIELD, csrf_token=guard.csrf_token(csrf_cookie), **context)
        response = HTMLResponse(html, status_code=status_code)
        if request.method == "GET" and request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie(LANG_COOKIE, language, max_age=ONE_YEAR, samesite="lax")
        if request.cookies.get(CSRF_COOKIE) != csrf_cookie:
            response.set_cookie(CSRF_COOKIE, csrf_cookie, httponly=True, samesite="strict")
        return response

    def error(self, request: Request, status_code: int, title_key: str, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status_code=status_code, title_key=title_key, message=message)


def _query(request: Request, **changes) -> Markup:
    """This page's query string with some parameters changed (None removes one), for links."""
    from urllib.parse import urlencode

    params = dict(request.query_params)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return Markup("?" + urlencode(params)) if params else Markup("?")


def _status_of(exc: RulecrmError) -> int:
    if isinstance(exc, ExplainError):
        return 404
    # the runner lock refused a change: the one StateError the store raises for a lock held elsewhere
    if isinstance(exc, StateError) and "in use by another rulecrm process" in str(exc):
        return 409
    if isinstance(exc, (StorageError, StateError)):
        return 503
    return 400


def create_app(console: Console) -> Starlette:
    from rulecrm.console import pages, posts

    renderer = Pages(console)

    async def bad_input(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, BadInput)
        text = i18n.Translator(i18n.pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                                                  request.headers.get("accept-language")))(exc.key, **exc.fields)
        return renderer.error(request, 400, "bad_request", text)

    async def refused(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, Refused)
        language = i18n.pick_language(None, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        return renderer.error(request, 403, "refused", i18n.Translator(language)(exc.reason))

    async def rulecrm_error(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, RulecrmError)
        return renderer.error(request, _status_of(exc), "error", str(exc))

    async def http_error(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            language = i18n.pick_language(None, request.cookies.get(LANG_COOKIE),
                                          request.headers.get("accept-language"))
            return renderer.error(request, 404, "not_found", i18n.Translator(language)("page_not_found"))
        if exc.status_code == 405:
            language = i18n.pick_language(None, request.cookies.get(LANG_COOKIE),
                                          request.headers.get("accept-language"))
            return renderer.error(request, 405, "error", i18n.Translator(language)("post_only"))
        return renderer.error(request, exc.status_code, "error", str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        log.error("console: %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        language = i18n.pick_language(None, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        return renderer.error(request, 500, "error", i18n.Translator(language)("internal_error"))

    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/customers", pages.customers, name="customers"),
        Route("/customers/{customer_id:path}", pages.customer, name="customer"),
        Route("/rules", pages.rules, name="rules"),
        Route("/outbox", pages.outbox, name="outbox"),
        Route("/dead-letters", pages.dead_letters, name="dead_letters"),
        Route("/sign-in", posts.sign_in, methods=["POST"]),
        Route("/sign-out", posts.sign_out, methods=["POST"]),
        Route("/outbox/retry", posts.retry_action, methods=["POST"]),
        Route("/dead-letters/retry", posts.retry_dead_letters, methods=["POST"]),
        Route("/dead-letters/remove", posts.remove_dead_letter, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        BadInput: bad_input, Refused: refused, RulecrmError: rulecrm_error,
        HTTPException: http_error, Exception: unexpected,
    })
    app.state.console = console
    app.state.pages = renderer
    return app

"""The console's only writes: sign-in and sign-out, retrying an action, retrying and removing dead letters.

Every one is a POST checked by `Guard.check_post` (Origin/Referer and the CSRF token of its form)
before anything else; the changes also need a signed-in session (`Guard.check_change`).
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse

from rulecrm.console import changes
from rulecrm.console.i18n import Translator, pick_language
from rulecrm.console.reading import StateFiles
from rulecrm.console.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard

MAX_FORM_FIELDS = 20


async def _checked_form(request: Request):
    """The form of a POST that passed the CSRF and origin checks (Refused otherwise)."""
    guard: Guard = request.app.state.console.guard
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    value = form.get(CSRF_FIELD)
    guard.check_post(cookie=request.cookies.get(CSRF_COOKIE), form_token=value if isinstance(value, str) else None,
                     origin=request.headers.get("origin"), referer=request.headers.get("referer"),
                     own_origin=f"{request.url.scheme}://{request.url.netloc}")
    return form


def _field(form, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _t(request: Request) -> Translator:
    return Translator(pick_language(None, request.cookies.get("lang"), request.headers.get("accept-language")))


async def sign_in(request: Request):
    form = await _checked_form(request)
    guard: Guard = request.app.state.console.guard
    if not guard.writable:
        return request.app.state.pages.error(request, 403, "refused", _t(request)("refused_read_only"))
    session = guard.sign_in(_field(form, "token"))
    if session is None:
        return request.app.state.pages.error(request, 403, "refused", _t(request)("wrong_token"))
    response = RedirectResponse(_back(form), status_code=303)
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
    return response


async def sign_out(request: Request):
    form = await _checked_form(request)
    request.app.state.console.guard.sign_out(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(_back(form), status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _back(form) -> str:
    """Where to go after signing in or out: a path of this console only (never another site)."""
    target = _field(form, "back")
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def _change_form(request: Request):
    form = await _checked_form(request)
    request.app.state.console.guard.check_change(request.cookies.get(SESSION_COOKIE))
    return form


async def retry_action(request: Request):
    from starlette.concurrency import run_in_threadpool

    form = await _change_form(request)
    console = request.app.state.console
    key = _field(form, "key")
    state = StateFiles.open(console.state_path)
    action = await run_in_threadpool(changes.retry_action, state, key, rules_path=console.rules_path,
                                     manager=console.manager)
    message = _t(request)("retried_action", key=key, status=action.get("status"))
    return request.app.state.pages.render(request, "done.html", message=message, back="/outbox")


async def retry_dead_letters(request: Request):
    from starlette.concurrency import run_in_threadpool

    form = await _change_form(request)
    console = request.app.state.console
    letter_id, raw = _field(form, "id"), _field(form, "raw")
    fixes = {letter_id: raw.strip()} if letter_id and raw.strip() else {}
    state = StateFiles.open(console.state_path)
    result = await run_in_threadpool(changes.retry_dead_letters, state, rules_path=console.rules_path,
                                     manager=console.manager, fixes=fixes)
    message = _t(request)("retried_letters", applied=result.applied, duplicates=result.duplicates,
                          still=result.still_rejected)
    details = [f"{item.get('source')}:{item.get('line_no')}: {item.get('error')}" for item in result.remaining]
    return request.app.state.pages.render(request, "done.html", message=message, details=details,
                                          back="/dead-letters")


async def remove_dead_letter(request: Request):
    from starlette.concurrency import run_in_threadpool

    form = await _change_form(request)
    console = request.app.state.console
    letter_id = _field(form, "id")
    await run_in_threadpool(changes.remove_dead_letter, StateFiles.open(console.state_path), letter_id)
    return request.app.state.pages.render(request, "done.html", message=_t(request)("removed_letter", id=letter_id),
                                          back="/dead-letters")

"""The console's words in English and Chinese; every visible string of a page comes from here.

The language is the `lang` query parameter (which the console then keeps in a `lang` cookie), else
that cookie, else the browser's Accept-Language, else English. What comes from the state or the
rules (rule ids, statuses, reasons, `explain`'s report) is shown as it is stored.
"""
from __future__ import annotations

LANGUAGES = ("en", "zh")
DEFAULT = "en"
LANGUAGE_NAMES = {"en": "English", "zh": "中文"}

# key: (English, Chinese)
MESSAGES: dict[str, tuple[str, str]] = {
    "title": ("rulecrm console", "rulecrm 运营控制台"),
    "nav_overview": ("Overview", "概览"),
    "nav_customers": ("Customers", "客户"),
    "nav_rules": ("Rules", "规则"),
    "nav_outbox": ("Outbox", "发件箱"),
    "nav_dead_letters": ("Dead letters", "死信"),
    "language": ("Language", "语言"),
    "state": ("State", "状态库"),
    "rules_dir": ("Rules", "规则目录"),
    "read_only_banner": ("Read-only: this console was started without --token-env, so nothing can be changed here.",
                         "只读：控制台启动时未指定 --token-env，此处无法做任何修改。"),
    "token_banner": ("Changes (retry, fix, remove) need the console's token.",
                     "修改操作（重试、修正、删除）需要控制台令牌。"),
    "signed_in": ("Signed in: changes are allowed.", "已登录：可以修改。"),
    "token": ("Token", "令牌"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "signed_in_done": ("Signed in.", "登录成功。"),
    "signed_out_done": ("Signed out.", "已退出。"),
    "wrong_token": ("Wrong token.", "令牌错误。"),
    "refused": ("Refused", "已拒绝"),
    "refused_read_only": ("This console is read-only (started without --token-env).",
                          "控制台为只读（启动时未指定 --token-env）。"),
    "refused_token": ("Sign in with the token first.", "请先用令牌登录。"),
    "refused_csrf": ("The form's security token is missing or wrong; reload the page and try again.",
                     "表单的安全令牌缺失或错误；请刷新页面后重试。"),
    "refused_origin": ("The request did not come from a page of this console.", "请求并非来自本控制台的页面。"),
    "error": ("Error", "错误"),
    "not_found": ("Not found", "未找到"),
    "page_not_found": ("There is no such page.", "没有这个页面。"),
    "bad_request": ("Bad request", "请求有误"),
    "internal_error": ("The console met an unexpected problem; the details are in its log.",
                       "控制台遇到意外问题；详情见其日志。"),
    "post_only": ("This address only takes the console's forms (POST).", "此地址只接受控制台的表单提交（POST）。"),
    "back": ("Back", "返回"),
    "from": ("From", "从"),
    "to": ("To", "到"),
    "apply": ("Apply", "应用"),
    "bad_date": ("{name} must be a date written YYYY-MM-DD, not {value!r}.",
                 "{name} 须为 YYYY-MM-DD 格式的日期，而不是 {value!r}。"),
    "bad_page": ("page must be a whole number of at least 1, not {value!r}.",
                 "page 须为不小于 1 的整数，而不是 {value!r}。"),
    "bad_choice": ("{name} cannot be {value!r}; one of: {choices}.", "{name} 不能是 {value!r}；可选：{choices}。"),
    "period_reversed": ("The period ends ({to}) before it starts ({start}).",
                 "时间段的结束（{to}）早于开始（{start}）。"),
    # overview
    "events": ("Events", "事件"),
    "customers": ("Customers", "客户数"),
    "events_per_day": ("Events per day, by type", "每日事件（按类型）"),
    "actions_per_day_status": ("Actions per day, by status", "每日动作（按状态）"),
    "actions_per_day_rule": ("Actions per day, by rule", "每日动作（按规则）"),
    "actions_by_rule_status": ("Actions by rule and status", "动作（按规则与状态）"),
    "rule": ("Rule", "规则"),
    "status": ("Status", "状态"),
    "count": ("Count", "次数"),
    "total": ("Total", "合计"),
    "caps_hit": ("Caps that bit", "触发的频控上限"),
    "caps_none": ("No action was suppressed by a cap.", "没有动作因频控上限被抑制。"),
    "cap": ("Cap", "上限"),
    "outbox_depth": ("Outbox", "发件箱"),
    "queued": ("Queued", "排队中"),
    "failed": ("Failed", "失败"),
    "dead": ("Dead", "已放弃"),
    "latest_failures": ("Latest failures", "最近的失败"),
    "no_failures": ("No failed or dead action.", "没有失败或已放弃的动作。"),
    "dead_letter_count": ("Dead letters", "死信数"),
    "last_reload": ("Last reload", "最近一次规则加载"),
    "no_reload_record": ("No runner has loaded rules on this state yet (a replay's state).",
                         "还没有运行器在这个状态库上加载过规则（这是回放生成的状态库）。"),
    "reload_at": ("{at}, {what} (runner pid {pid})", "{at}，{what}（运行器进程 {pid}）"),
    "reload_what_start": ("loaded at start", "启动时加载"),
    "reload_what_reload": ("the rule files changed", "规则文件有改动"),
    "reload_ok": ("in force, {rules} active rule(s)", "已生效，{rules} 条启用的规则"),
    "reload_refused": ("refused; the previous rules stay in force", "被拒绝；之前的规则继续生效"),
    "rules_now": ("The rule files now (`rulecrm check`)", "规则文件的当前状态（`rulecrm check`）"),
    "no_diagnostics": ("No errors, no warnings.", "没有错误，也没有警告。"),
    "errors_warnings": ("{errors} error(s), {warnings} warning(s)", "{errors} 个错误，{warnings} 个警告"),
    "no_data": ("Nothing in this period.", "该时间段内没有数据。"),
    "chart_table": ("Data", "数据"),
    "day": ("Day", "日期"),
    # customers
    "search": ("Search", "搜索"),
    "search_hint": ("Customer id or name", "客户 ID 或姓名"),
    "no_match": ("No customer matches {text!r}.", "没有客户匹配 {text!r}。"),
    "customer": ("Customer", "客户"),
    "name": ("Name", "姓名"),
    "unknown_customer": ("The state has no customer {customer!r}.", "状态库中没有客户 {customer!r}。"),
    "profile": ("Profile", "客户档案"),
    "tags": ("Tags", "标签"),
    "stage": ("Stage", "阶段"),
    "no_tags": ("No tags.", "没有标签。"),
    "timeline": ("Timeline", "时间线"),
    "time": ("Time", "时间"),
    "what": ("What", "内容"),
    "event": ("Event", "事件"),
    "action": ("Action", "动作"),
    "reason": ("Reason", "原因"),
    "message": ("Message", "消息"),
    "stage_changes": ("Stage changes", "阶段变化"),
    "no_stage_changes": ("No stage change.", "没有阶段变化。"),
    "pending_timers": ("Pending timers", "待触发的定时器"),
    "no_timers": ("No pending timer.", "没有待触发的定时器。"),
    "due": ("Due", "到期"),
    "kind": ("Kind", "类型"),
    "why": ("Why / why not", "为什么触发 / 为什么没有触发"),
    "why_hint": ("What `rulecrm explain` reports for this customer and rule.",
                 "`rulecrm explain` 针对该客户与规则的报告。"),
    "explain": ("Explain", "解释"),
    "all_rules": ("All rules", "全部规则"),
    "verdict": ("Verdict", "结论"),
    "shard": ("Shard", "分片"),
    "rules_unloadable": ("The rules have errors, so they cannot be used here; see the Rules page.",
                         "规则有错误，无法在此使用；请查看规则页面。"),
    # rules
    "rule_files": ("Rule files", "规则文件"),
    "rule_activity": ("How often each rule acted", "各规则的动作次数"),
    "fired": ("Fired", "已执行"),
    "suppressed": ("Suppressed", "被抑制"),
    "held": ("Held", "暂缓"),
    "period_all": ("All time", "全部时间"),
    "line": ("Line", "行"),
    # outbox
    "any": ("Any", "全部"),
    "channel": ("Channel", "渠道"),
    "filter": ("Filter", "筛选"),
    "key": ("Key", "键"),
    "attempts": ("Attempts", "尝试次数"),
    "error_text": ("Error", "错误信息"),
    "retry": ("Retry", "重试"),
    "matching": ("{total} matching action(s)", "共 {total} 个匹配的动作"),
    "no_actions": ("No action matches.", "没有匹配的动作。"),
    "page_of": ("Page {page} of {pages}", "第 {page} 页，共 {pages} 页"),
    "previous": ("Previous", "上一页"),
    "next": ("Next", "下一页"),
    "retried_action": ("Action {key} retried: it is now {status}.", "动作 {key} 已重试：当前状态为 {status}。"),
    # dead letters
    "dead_letters_hint": ("Input lines that were rejected. Edit a line and retry it: like `rulecrm dead-letters "
                          "--retry`, a retry parses every dead letter again and applies the valid ones to the state.",
                          "被拒绝的输入行。可修改某一行后重试：与 `rulecrm dead-letters --retry` 相同，重试会重新解析"
                          "所有死信，并把有效的行应用到状态库。"),
    "id": ("ID", "编号"),
    "source": ("Source", "来源"),
    "raw": ("Line", "原始行"),
    "remove": ("Remove", "删除"),
    "retry_fixed": ("Save the fix and retry", "保存修改并重试"),
    "no_dead_letters": ("No dead letters.", "没有死信。"),
    "retried_letters": ("Retried: {applied} applied, {duplicates} duplicate(s), {still} still rejected.",
                        "已重试：应用 {applied} 条，重复 {duplicates} 条，仍被拒绝 {still} 条。"),
    "removed_letter": ("Dead letter {id} removed.", "死信 {id} 已删除。"),
    "count_of": ("{total} in all", "共 {total} 条"),
}


def pick_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: `?lang=`, then the `lang` cookie, then Accept-Language, then English."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    return from_accept_language(accept_language or "")


def from_accept_language(header: str) -> str:
    """The supported language the browser prefers most (`zh-CN,zh;q=0.9,en;q=0.8` -> zh)."""
    best, best_q = DEFAULT, -1.0
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        quality -= position * 1e-6  # at equal quality, the one listed first
        if quality > best_q:
            best, best_q = primary, quality
    return best


class Translator:
    """`t("key", **fields)`: the message in one language, with its fields filled in."""

    def __init__(self, language: str):
        self.language = language if language in LANGUAGES else DEFAULT
        self._index = LANGUAGES.index(self.language)

    def __call__(self, message: str, /, **fields) -> str:
        text = MESSAGES[message][self._index]
        return text.format(**fields) if fields else text

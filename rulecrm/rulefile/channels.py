"""The `channels` and `contacts` sections: named channel instances, their settings and secrets."""
from __future__ import annotations

import re

from rulecrm.rulefile.declared import ADDRESSLESS_CHANNEL_TYPES, Declared
from rulecrm.rulefile.fields import INVALID, Fields, integer, mapping, text
from rulecrm.rulefile.model import Channel, Contact
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.yamlpos import Map, Scalar, Seq, describe
from rulecrm.schema import PROFILE_FIELDS
from rulecrm.suggest import did_you_mean

CHANNEL_NAME = re.compile(r"[a-z0-9_-]+")
CONTACT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
CONTACT_KEYS = ("channel", "address")
CONTACT_REQUIRED = ("channel",)
RESERVED_RECIPIENTS = ("customer", "owner")
TYPE_KEY = "type"
ENV_SUFFIX = "_env"  # `<setting>_env: VARIABLE` names the environment variable holding the setting
# A setting name is split into words at these characters; it looks secret when a word is one of
# SECRET_WORDS or ends with one of SECRET_ENDINGS (`key`, `api_key`, `access_token`, `smtp-password`).
SETTING_WORD_SEPARATORS = "_-."
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "apikey")
SECRET_ENDINGS = ("secret", "token", "password")
# Every channel may say which profile field holds a customer's address on it (e.g. an SMS gateway
# behind a webhook reads `phone`); it overrides the channel type's own choice.
ADDRESS_FIELD = "address_field"
ADDRESS_FIELDS = tuple(field for field, kind in PROFILE_FIELDS.items() if kind == "string")
# Every channel may also say how many of its sends may be in flight at once (docs/running.md,
# "Concurrent delivery"); a channel type that is not thread-safe gets one at a time whatever it says.
CONCURRENCY = "concurrency"
DEFAULT_CONCURRENCY = 16  # a provider answering in 100 ms then takes 160 sends a second
MAX_CONCURRENCY = 64
GENERIC_SETTINGS = (ADDRESS_FIELD, CONCURRENCY)  # settings every channel takes, whatever its type
_MAX_SETTING_DEPTH = 20
_SETTING_WORDS = re.compile(f"[{re.escape(SETTING_WORD_SEPARATORS)}]")


def looks_secret(setting: str) -> bool:
    """`key`, `api_key`, `access_token`, `smtp-password` ... (but not `key_env` or `keyword`)."""
    parts = _SETTING_WORDS.split(setting.lower())
    return any(part in SECRET_WORDS or part.endswith(SECRET_ENDINGS) for part in parts)


def read_channels(report: Report, key: Scalar, node, declared: Declared) -> None:
    if mapping(report, node, label="channels") is INVALID:
        return
    for name_node, body in node.pairs:
        name = text(report, name_node, label="channel name", pattern=CHANNEL_NAME,
                    rule="lowercase letters, digits, '_' and '-'")
        channel = _read_channel(report, name if name else name_node.text, body, declared)
        if name and declared.claim(report, "channel", name, name_node) and channel is not None:
            declared.channels[name] = channel


def _read_channel(report: Report, name: str, body, declared: Declared) -> Channel | None:
    if mapping(report, body, label=f"channel {name}") is INVALID:
        return None
    pairs = {key.text: (key, value) for key, value in body.pairs}
    if TYPE_KEY not in pairs:
        report.error(body, f"channel {name!r} needs `type`", expected="a `type` key",
                     hint="known types: " + ", ".join(sorted(declared.channel_types)))
        return None
    type_name = text(report, pairs[TYPE_KEY][1], label=TYPE_KEY)
    settings = []
    for setting, (key, value) in pairs.items():
        if setting == TYPE_KEY:
            continue
        if setting.endswith(ENV_SUFFIX):
            env = text(report, value, label=setting)
            settings.append((setting, env))
        elif setting == ADDRESS_FIELD:
            field = text(report, value, label=setting)
            if field is not INVALID and field not in ADDRESS_FIELDS:
                report.error(value, "`address_field` must name a customer profile field", found=repr(field),
                             expected="one of " + ", ".join(ADDRESS_FIELDS),
                             hint=did_you_mean(field, ADDRESS_FIELDS))
            settings.append((setting, field))
        elif setting == CONCURRENCY:
            settings.append((setting, integer(report, value, label=setting, minimum=1, maximum=MAX_CONCURRENCY)))
        elif looks_secret(setting):
            report.error(key, f"secret {setting!r} must not be written in a rule file",
                         found=repr(setting), expected=f"`{setting}_env: VARIABLE_NAME`",
                         hint=f"put it in an environment variable and write `{setting}_env: <VARIABLE>`")
        else:
            settings.append((setting, plain_value(report, value, label=setting)))
    if type_name is INVALID:
        return None
    info = declared.channel_types.get(type_name)
    if info is None:
        report.warning(pairs[TYPE_KEY][1], f"no installed plugin provides channel type {type_name!r}; "
                       f"sends on channel {name!r} cannot be dispatched (replay does not need the adapter)",
                       expected="one of " + ", ".join(sorted(declared.channel_types)), found=repr(type_name),
                       hint=did_you_mean(type_name, declared.channel_types) or "install the plugin that provides it")
    else:
        _check_settings(report, name, body, pairs, info)
        if CONCURRENCY in pairs and not info.thread_safe:
            report.warning(pairs[CONCURRENCY][0], f"channel type {type_name!r} is not thread-safe: channel {name!r} "
                           "sends one message at a time whatever its `concurrency` says",
                           hint="remove `concurrency`, or ask the plugin's authors to make the type thread-safe")
    return Channel(name, type_name, tuple(settings), report.source(body))


def _check_settings(report: Report, name: str, body: Map, pairs: dict, info) -> None:
    allowed = sorted(info.settings)
    for setting, (key, _) in pairs.items():
        if setting in (TYPE_KEY, *GENERIC_SETTINGS) or setting.endswith(ENV_SUFFIX) or setting in info.settings \
                or looks_secret(setting):
            continue
        report.error(key, f"unknown setting {setting!r} for channel type {info.name!r}",
                     expected="one of " + ", ".join([TYPE_KEY, *allowed]), found=repr(setting),
                     hint=did_you_mean(setting, allowed) or (None if allowed else f"{info.name!r} takes no settings"))
    for required in sorted(info.required):
        if required not in pairs and f"{required}{ENV_SUFFIX}" not in pairs:
            report.error(body, f"channel {name!r} of type {info.name!r} needs `{required}`",
                         expected=f"a `{required}` (or `{required}_env`) setting")


def plain_value(report: Report, node, *, label: str, depth: int = 0):
    """A setting's value as plain Python data (scalars, lists, mappings)."""
    if depth > _MAX_SETTING_DEPTH:
        report.error(node, f"setting `{label}` is nested too deeply", found=describe(node))
        return None
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Seq):
        return tuple(plain_value(report, item, label=label, depth=depth + 1) for item in node.items)
    return tuple((key.text, plain_value(report, value, label=label, depth=depth + 1)) for key, value in node.pairs)


def read_contacts(report: Report, key: Scalar, node, declared: Declared) -> None:
    if mapping(report, node, label="contacts") is INVALID:
        return
    for name_node, body in node.pairs:
        name = text(report, name_node, label="contact name", pattern=CONTACT_NAME,
                    rule="letters, digits, '_', '.' and '-'")
        if name in RESERVED_RECIPIENTS:
            report.error(name_node, f"{name!r} cannot be a contact name: notify `to: {name}` already means "
                         "something", hint="choose another name")
            name = INVALID
        contact = _read_contact(report, name if name else name_node.text, body, declared)
        if name and declared.claim(report, "contact", name, name_node) and contact is not None:
            declared.contacts[name] = contact


def _read_contact(report: Report, name: str, body, declared: Declared) -> Contact | None:
    if mapping(report, body, label=f"contact {name}") is INVALID:
        return None
    fields = Fields(report, body, CONTACT_KEYS, what=f"contact {name!r}", required=CONTACT_REQUIRED)
    channel = fields.get("channel", read_channel_ref, declared=declared)
    address = fields.get("address", text)
    channel_type = declared.channel_type(channel) if channel else None
    if "address" not in fields:
        if channel_type in ADDRESSLESS_CHANNEL_TYPES:
            address = name
        elif channel:
            report.error(body, f"contact {name!r} needs `address`",
                         expected=f"an address on channel {channel!r} (a group, phone number, e-mail ...)")
    if not channel or not address:
        return None
    return Contact(name, channel, address, report.source(body))


def read_channel_ref(report: Report, node, *, label: str, declared: Declared):
    """The name of a declared channel (or `console`)."""
    name = text(report, node, label=label)
    if name is INVALID:
        return INVALID
    known = declared.channel_names()
    if name not in known and declared.complete:
        report.error(node, f"unknown channel {name!r}", expected="a channel declared under `channels` or console",
                     found=repr(name), hint=did_you_mean(name, known, cutoff=0.5))
        return INVALID
    return name


"""The `wecom-contact` channel: mass-send tasks and corp tags through WeCom's customer-contact API."""
from __future__ import annotations

import logging
import threading

from rulecrm.channels import DELIVERED, PERMANENT, ChannelConfig, ChannelConfigError, Delivery, Message

from .protocol import TOKEN_ERRCODES, utf8_len
from .settings import DEFAULT_TAG_GROUP, base_url_setting, timeout_setting
from .token import TokenCache
from .transport import CallFailed, call, ensure_ok

log = logging.getLogger(__name__)

MAX_TEXT_BYTES = 4000  # add_msg_template's text.content limit as commonly documented


class ContactChannel:
    """Creates one single-chat mass-send task per message and syncs tag actions as corp tags."""

    def __init__(self, config: ChannelConfig, *, clock=None):  # clock: for tests of token expiry
        self.name = config.name
        self.sender = str(config.get("sender") or "")
        if not self.sender:
            raise ChannelConfigError(f"channel {self.name!r}: set `sender` to the userid of the rep who sends")
        corp_id = config.secret("corp_id") if config.get("corp_id_env") else config.get("corp_id")
        if not corp_id:
            raise ChannelConfigError(f"channel {self.name!r}: set `corp_id` (or `corp_id_env`)")
        self._base_url = base_url_setting(config)
        self.tag_group = str(config.get("tag_group") or DEFAULT_TAG_GROUP)
        self.timeout = timeout_setting(config)
        self.token = TokenCache(self._base_url, str(corp_id), config.secret("secret"), timeout=self.timeout,
                                clock=clock)
        self._tags: dict[str, str] | None = None  # tag name -> tag id, from get_corp_tag_list
        self._tags_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContactChannel(name={self.name!r}, sender={self.sender!r})"

    def send(self, message: Message) -> Delivery:
        """Creates a mass-send task for one customer; DELIVERED means queued for the rep to confirm."""
        if not message.address:
            return Delivery(PERMANENT, code="no-address", detail="the customer has no external_userid (wecom_id)")
        size = utf8_len(message.text)
        if size > MAX_TEXT_BYTES:
            return Delivery(PERMANENT, code="too-long",
                            detail=f"text is {size} bytes; a mass-send task takes at most {MAX_TEXT_BYTES}")
        task = {"chat_type": "single", "external_userid": [message.address], "sender": self.sender,
                "text": {"content": message.text}}
        try:
            body = self._api("externalcontact/add_msg_template", task)
        except CallFailed as failed:
            return self._failed("send", failed.delivery)
        if message.address in (body.get("fail_list") or ()):
            return self._failed("send", Delivery(PERMANENT, code="fail_list", detail=(
                f"WeCom did not queue the message: the customer is not a contact of {self.sender} "
                "or has reached the mass-send limit")))
        task_id = body.get("msgid", "?")
        return Delivery(DELIVERED, detail=f"mass-send task {task_id} awaits {self.sender}'s confirmation")

    def sync_tags(self, customer_id: str, address: str, add, remove) -> Delivery:
        """Marks the customer (as a contact of `sender`) with corp tags by name, creating missing ones."""
        if not address:
            return Delivery(PERMANENT, code="no-address", detail=f"customer {customer_id} has no external_userid")
        add, remove = list(dict.fromkeys(add)), list(dict.fromkeys(remove))
        if not add and not remove:
            return Delivery(DELIVERED)
        try:
            add_ids, remove_ids = self._tag_ids(add, remove)
            if add_ids or remove_ids:
                self._api("externalcontact/mark_tag", {"userid": self.sender, "external_userid": address,
                                                       "add_tag": add_ids, "remove_tag": remove_ids})
        except CallFailed as failed:
            with self._tags_lock:
                self._tags = None  # a tag may have been deleted in the admin console: reload next time
            return self._failed("sync_tags", failed.delivery)
        return Delivery(DELIVERED)

    def close(self) -> None:
        pass

    def _api(self, path: str, payload: dict) -> dict:
        """POST to a token-authenticated API; a rejected token is replaced once and the call repeated."""
        token = self.token.get()
        body = call(self._url(path, token), payload, timeout=self.timeout, secrets=self.token.secrets)
        if body.get("errcode") in TOKEN_ERRCODES:
            self.token.invalidate(token)
            token = self.token.get()
            body = call(self._url(path, token), payload, timeout=self.timeout, secrets=self.token.secrets)
        return ensure_ok(body, self.token.secrets)

    def _url(self, path: str, token: str) -> str:
        return f"{self._base_url}/cgi-bin/{path}?access_token={token}"

    def _tag_ids(self, add: list[str], remove: list[str]) -> tuple[list[str], list[str]]:
        """Tag ids by name: names to add that WeCom lacks are created in `tag_group`, unknown removals skipped."""
        with self._tags_lock:
            if self._tags is None or any(name not in self._tags for name in add + remove):
                self._tags = self._load_tags()
            missing = [name for name in add if name not in self._tags]
            if missing:
                self._tags.update(self._create_tags(missing))
            tags = self._tags
            return [tags[name] for name in add if name in tags], [tags[name] for name in remove if name in tags]

    def _load_tags(self) -> dict[str, str]:
        """Every corp tag by name; where a name repeats across groups, the one in `tag_group` wins."""
        body = self._api("externalcontact/get_corp_tag_list", {})
        groups = sorted(body.get("tag_group") or (), key=lambda group: group.get("group_name") == self.tag_group)
        return {tag["name"]: tag["id"] for group in groups for tag in group.get("tag") or ()
                if tag.get("name") and tag.get("id") and not tag.get("deleted")}

    def _create_tags(self, names: list[str]) -> dict[str, str]:
        body = self._api("externalcontact/add_corp_tag",
                         {"group_name": self.tag_group, "tag": [{"name": name} for name in names]})
        created = (body.get("tag_group") or {}).get("tag") or ()
        return {tag["name"]: tag["id"] for tag in created if tag.get("name") and tag.get("id")}

    def _failed(self, what: str, delivery: Delivery) -> Delivery:
        log.warning("wecom-contact %s %s: %s %s %s", self.name, what, delivery.status, delivery.code, delivery.detail)
        return delivery

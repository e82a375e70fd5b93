"""The hooks rulecrm calls: the demo-sms channel type, an `sms_segments` function, a log and a command."""
from __future__ import annotations

import logging
import os

import click

from rulecrm.channels import ChannelConfig, ChannelType, Limits, Message, Setting
from rulecrm.hookspecs import hookimpl

from .channel import DemoSmsChannel

logger = logging.getLogger("rulecrm_demo_sms")


@hookimpl
def rulecrm_channel_types():
    return [
        ChannelType(
            "demo-sms",
            DemoSmsChannel,
            settings=(
                Setting("url", required=True, help="the gateway's send endpoint"),
                Setting("token", required=True, secret=True, help="API token (give token_env)"),
                Setting("sender", help="sender name shown on the phone"),
            ),
            limits=Limits(per_minute=60, max_bytes=670, rate_key="url"),
            address_field="phone",
            description="text messages through the Demo SMS gateway",
        )
    ]


@hookimpl
def rulecrm_functions():
    return {"sms_segments": sms_segments}


def sms_segments(text):
    """How many SMS parts a text takes: 160 plain characters, or 70 when it needs Unicode."""
    if not isinstance(text, str):
        return None  # a missing value stays missing
    size = 160 if text.isascii() else 70
    return max(1, -(-len(text) // size))


@hookimpl
def rulecrm_action_dispatched(action, delivery):
    if not delivery.ok:  # log the key and the gateway's code, never the phone number or the text
        logger.warning("%s on %s: %s %s", action["key"], action["channel"], delivery.status, delivery.code)


@hookimpl
def rulecrm_register_commands(cli):
    cli.add_command(demo_sms_send)


@click.command("demo-sms-send")
@click.option("--url", required=True, help="The gateway's send endpoint.")
@click.option("--token-env", required=True, help="Environment variable holding the API token.")
@click.argument("phone")
@click.argument("text")
def demo_sms_send(url, token_env, phone, text):
    """Send one test message through a Demo SMS gateway and print its answer."""
    config = ChannelConfig("demo-sms", "demo-sms", {"url": url, "token_env": token_env}, env=os.environ)
    message = Message(key="demo-sms-send", channel="demo-sms", address=phone, text=text, kind="service",
                      customer_id="-", rule="-")
    delivery = DemoSmsChannel(config).send(message)
    click.echo(f"{delivery.status} {delivery.code or ''}".strip())

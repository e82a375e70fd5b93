"""Known event types, their fields and the customer profile's fields, with value types for `check`.

Value types: "number", "string", "bool", "timestamp", "duration", "tags" (a set of strings),
"mapping" (nested, fields unknown), "any" (unknown).
"""
from __future__ import annotations

ORDER_FIELDS = {
    "order_id": "string",
    "sku": "string",
    "category": "string",
    "amount": "number",
    "quantity": "number",
    "price": "number",
    "platform": "string",
    "name": "string",
}

PROFILE_FIELDS = {
    "name": "string",
    "phone": "string",
    "email": "string",
    "wecom_id": "string",
    "owner": "string",
    "birthday": "string",
    "timezone": "string",
    "source": "string",
    "channel": "string",
    "attributes": "mapping",
}

BUILTIN_EVENT_TYPES: dict[str, dict[str, str]] = {
    "customer.upserted": dict(PROFILE_FIELDS),
    "contact.added": {"wecom_id": "string", "owner": "string", "source": "string"},
    "contact.removed": {"wecom_id": "string", "owner": "string"},
    "order.placed": dict(ORDER_FIELDS),
    "order.delivered": dict(ORDER_FIELDS),
    "order.refunded": dict(ORDER_FIELDS),
    "review.created": {"review_id": "string", "order_id": "string", "rating": "number", "text": "string"},
    "review.handled": {"review_id": "string", "order_id": "string", "by": "string"},
    "complaint.opened": {"complaint_id": "string", "order_id": "string", "text": "string"},
    "complaint.resolved": {"complaint_id": "string", "order_id": "string", "by": "string"},
    "chat.received": {"text": "string", "from": "string"},
    "message.sent": {"kind": "string", "channel": "string", "text": "string"},
    "customer.opted_out": {"reason": "string"},
    "customer.opted_in": {},
    # synthetic events made by the engine
    "stage.changed": {"from": "string", "to": "string"},
    "birthday": {"year": "number", "age": "number"},
}

# Items a customer has open until a later event closes them: the opening event type -> (the field
# naming the item, the closing event type). The profile keeps them as `open_reviews` and
# `open_complaints`, and the testing kit judges escalations of reviews and complaints by them.
ITEM_LIFECYCLES: dict[str, tuple[str, str]] = {
    "review.created": ("review_id", "review.handled"),
    "complaint.opened": ("complaint_id", "complaint.resolved"),
}

# Fields every event has besides its data.
EVENT_ENVELOPE_FIELDS = {"type": "string", "at": "timestamp", "customer_id": "string", "id": "string"}

PER_KEY_FIELDS = {  # customer.sku["x"].<field> and customer.category["x"].<field>
    "order_count": "number",
    "last_order_at": "timestamp",
    "last_order": "mapping",
    "total_spent": "number",
}

CUSTOMER_FIELDS = {
    "id": "string",
    **PROFILE_FIELDS,
    "order_count": "number",
    "total_spent": "number",
    "refund_count": "number",
    "first_order_at": "timestamp",
    "last_order_at": "timestamp",
    "last_order": "mapping",
    "last_delivered_at": "timestamp",
    "sku": "mapping",  # per sku: PER_KEY_FIELDS
    "category": "mapping",  # per category: PER_KEY_FIELDS
    "tags": "tags",
    "stage": "string",
    "opted_out": "bool",
    "is_contact": "bool",
    "open_reviews": "number",
    "open_complaints": "number",
    "first_seen_at": "timestamp",
}

PRODUCT_FIELDS = {
    "sku": "string",
    "name": "string",
    "category": "string",
    "cycle": "duration",
    "learn_cycle": "bool",
    "learn_min_orders": "number",
    "price": "number",
}

STAGES = ("new", "growing", "mature", "dormant", "churned")

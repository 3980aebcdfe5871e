"""messaging: SMS delivery — the sender boundary, the Alibaba Cloud SMS adapter, and the worker's delivery task.

``sender`` is the boundary (send one message → accepted, retryable or permanent; look a
message up by its OutId); ``aliyun`` speaks Alibaba Cloud SMS (``SendSms``,
``QuerySendDetails``, HMAC-SHA1 request signatures); ``outbox`` claims and records rows of the
outbox ``core.sms`` writes; ``pace`` shares one send rate among every delivery worker;
``delivery`` is the worker's task; ``stats`` the figures ``/metrics`` shows.
"""

from messaging.sender import Accepted, Outgoing, Permanent, Retryable, Sender, SendResult

__all__ = ["Accepted", "Outgoing", "Permanent", "Retryable", "SendResult", "Sender"]

"""HTTP errors and the one table that maps every package's errors to responses."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from captcha.errors import CaptchaInvalid, CaptchaRequired, PoolEmpty
from core.account_maintenance import PasswordIncorrect, RecordRefused
from core.agreements import AgreementRequired, AgreementVersionChanged
from core.candidates import AccountConflict
from core.documents import VersionMismatch as DocumentVersionMismatch
from core.errors import CoreError, NotFound, StorageUnavailable
from core.imports import BatchConflict, ImportRejected, UnknownKind, UnsupportedContentType
from core.imports.parse import FormatNotAccepted
from core.lifecycle import (
    CommitmentNotAllowed,
    CommitmentRequired,
    StaleVersion,
    TransitionRefused,
)
from core.operators import (
    InvalidOperator,
    OperatorDisabled,
    OperatorExists,
    OperatorNotFound,
    OutOfScope,
    TokenNotFound,
)
from core.passwords import PoolFull
from core.photo_review import PhotoConflict, PhotoRequired
from core.photos import ImagePoolFull, PhotoLocked
from core.qualification import MajorMismatch, RulesInvalid
from core.recovery import (
    AttemptsExhausted,
    CodeInvalid,
    PasswordRejected,
    ResetInvalid,
    SendThrottled,
)
from core.registrations import (
    AlreadyRegistered,
    RegistrationClosed,
    RegistrationInvalid,
)
from core.timeutil import iso_local, utcnow
from gateway.configstore import ConfigCorrupt, VersionMismatch
from gateway.liveconfig import InvalidConfig
from lookups.pdf import PdfError
from lookups.rules import NoRecord, TooEarly
from lookups.service import LookupsBusy
from payments.errors import ProviderRejected, ProviderUnavailable, RefundInvalid, TradeAlreadyPaid
from payments.orders import OrderRefused
from queueing.eligibility import NotApproved, OtherProvince, RegistrationInactive, SiteNotFound
from queueing.errors import AdmissionInvalid, PlaceExpired, PlaceNotFound
from queueing.holds import HoldContention, HoldUnconfirmed, InventoryMissing, NoSeatRight, SeatLocked, SiteFull
from queueing.reconcile import ReconcileError
from ratelimit.errors import LimiterUnavailable, RateLimited
from ratelimit.headers import ratelimit_headers


class ApiError(Exception):
    """An error answered with the API.md shape ``{"error": {code, message, details}}``."""

    status = 400
    code = "bad_request"
    message = "请求无效"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details or {}
        self.retry_after_s = retry_after_s
        self.headers = headers or {}
        super().__init__(self.message)


class MalformedBody(ApiError):
    """The body is not the JSON it claims to be (400)."""

    status, code, message = 400, "malformed_body", "请求内容不是有效的 JSON"


class Unauthorized(ApiError):
    """Not signed in, or bad credentials (401)."""

    status, code, message = 401, "unauthorized", "请先登录"


class Forbidden(ApiError):
    """Signed in but not allowed (403)."""

    status, code, message = 403, "forbidden", "无权执行此操作"


class NotFoundError(ApiError):
    """No such resource (404)."""

    status, code, message = 404, "not_found", "未找到相关记录"


class MethodNotAllowed(ApiError):
    """The path exists but not with this method (405)."""

    status, code, message = 405, "method_not_allowed", "不支持该请求方法"


class Conflict(ApiError):
    """The request conflicts with the current state (409)."""

    status, code, message = 409, "conflict", "请求与当前状态冲突"


class BodyTooLarge(ApiError):
    """The body is larger than the configured limit (413)."""

    status, code, message = 413, "body_too_large", "请求内容过大"


class UnsupportedMediaType(ApiError):
    """The body is not sent as the content type the route accepts (415)."""

    status, code, message = 415, "unsupported_media_type", "请求内容类型不受支持"


class ValidationFailed(ApiError):
    """Fields failed validation (422); ``details.fields`` maps field → problem."""

    status, code, message = 422, "validation_failed", "填写的信息有误，请检查后重试"

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        super().__init__(message, details={"fields": fields})


class Overloaded(ApiError):
    """The service is shedding load (503, with Retry-After)."""

    status, code, message = 503, "overloaded", "当前访问人数过多，请稍后重试"


class InvalidCredentials(ApiError):
    """Unknown username or wrong password: one answer for both (401)."""

    status, code, message = 401, "invalid_credentials", "用户名或密码错误"


class MalformedRequest(ApiError):
    """The request is not valid HTTP: its request line, a header or its framing (400)."""

    status, code, message = 400, "malformed_request", "请求格式无效"


class RequestTimeout(ApiError):
    """The body did not arrive within the time allowed (408; the connection is closed)."""

    status, code, message = 408, "request_timeout", "请求发送超时，请检查网络后重试"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """The JSON body every error response carries."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    try:
        return orjson.dumps(body)
    except TypeError:  # details echo the request: bytes that are not UTF-8, integers beyond 64 bits
        return orjson.dumps(_encodable(body))


def _encodable(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (a lone surrogate written as its escape, ``\\udcb2``)
    and every integer beyond 64 bits written as a string."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(item) for item in value]
    return value


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up so a client never retries too early."""
    return str(max(1, math.ceil(seconds - 1e-9)))


def to_response(error: ApiError) -> web.Response:
    """Render an ApiError."""
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = retry_after_header(error.retry_after_s)
    return web.Response(
        status=error.status,
        body=error_body(error.code, error.message, error.details),
        content_type="application/json",
        headers=headers,
    )


def _storage_unavailable(exc: StorageUnavailable) -> ApiError:
    return Overloaded("服务暂时不可用，请稍后重试", code="service_unavailable", retry_after_s=2,
                      details={"store": exc.store})


# What a domain's NotFound names → the code and message the client reads.
_NOT_FOUND = {
    "registration": ("registration_not_found", "报名记录不存在"),
    "commitment": ("commitment_not_found", "未签署告知承诺书"),
    "cancellation request": ("cancellation_request_not_found", "没有待处理的放弃报名申请"),
}


def _not_found(exc: NotFound) -> ApiError:
    code, message = _NOT_FOUND.get(exc.what, ("not_found", None))
    return NotFoundError(message, code=code)


def rate_limited(exc: RateLimited, code: str = "too_many_requests",
                 message: str = "操作过于频繁，请稍后再试") -> ApiError:
    """The 429 for a rate-limit refusal: Retry-After, RateLimit headers, the refusing rules; ``code`` per route."""
    headers = ratelimit_headers(exc.verdict)
    headers.pop("Retry-After", None)  # set from retry_after_s, rounded up the same way
    return ApiError(message, code=code, status=429, retry_after_s=exc.retry_after_s, headers=headers,
                    details={"retry_after_s": round(exc.retry_after_s, 3), "rules": list(exc.rule_ids)})


def _rate_limited(exc: RateLimited) -> ApiError:
    return rate_limited(exc)


def _invalid_config(exc: InvalidConfig) -> ApiError:
    return ApiError("the config change is invalid; nothing was applied", code="invalid_config", status=422,
                    details={"fields": exc.problems})


def _version_mismatch(exc: VersionMismatch) -> ApiError:
    return ApiError("the config changed since that version; read it again", code="version_mismatch",
                    status=412, details={"current_version": exc.current})


def _config_corrupt(exc: ConfigCorrupt) -> ApiError:
    return ApiError("the stored config cannot be read; PATCH a complete valid document to replace it",
                    code="config_corrupt", status=500, details={"version": exc.version, "reason": exc.reason})


def _limiter_unavailable(exc: LimiterUnavailable) -> ApiError:
    return Overloaded("服务繁忙，请稍后重试", code="overloaded", retry_after_s=exc.retry_after_s)


def _captcha_invalid(exc: CaptchaInvalid) -> ApiError:
    # The reason stays in logs: telling a client "expired" rather than "wrong" only helps a bot.
    return ApiError("验证码错误或已失效，请重新获取", code="captcha_invalid", status=400)


def _captcha_required(exc: CaptchaRequired) -> ApiError:
    # details.captcha tells the page which captcha to show; the answer is the same whether the account exists.
    return ApiError("为保护账号安全，请完成图片验证码后重试", code="captcha_required", status=400,
                    details={"captcha": exc.kind})


def _pool_empty(exc: PoolEmpty) -> ApiError:
    return Overloaded("验证码暂时无法获取，请稍后重试", code="service_unavailable", retry_after_s=exc.retry_after_s,
                      details={"reason": "captcha_pool_empty"})


_CONFLICT_MESSAGES = {
    "id_number_taken": "该证件号码已注册，请直接登录或找回密码",
    "phone_taken": "该手机号码已被其他账号使用",
    "username_taken": "该用户名已被使用，请换一个",
}


def _account_conflict(exc: AccountConflict) -> ApiError:
    return Conflict(_CONFLICT_MESSAGES.get(exc.code, "该账号信息已被注册"), code=exc.code,
                    details={"field": exc.field})


def _pool_full(exc: PoolFull) -> ApiError:
    return Overloaded(retry_after_s=exc.retry_after_s, details={"reason": "password_pool_full"})


def _image_pool_full(exc: ImagePoolFull) -> ApiError:
    return Overloaded(retry_after_s=exc.retry_after_s, details={"reason": "image_pool_full"})


def _photo_locked(exc: PhotoLocked) -> ApiError:
    return Conflict("照片已审核通过并锁定，不能自行更换；如需更换，请提交更换申请，经审核同意后可重新上传一次",
                    code="photo_locked")


_PHOTO_MISSING = {
    None: "请先上传本人证件照，照片审核通过后才能确认报名信息",
    "needs_review": "照片正在审核中，审核通过后才能确认报名信息",
    "rejected": "照片审核未通过，请重新上传照片，审核通过后才能确认报名信息",
}


def _photo_required(exc: PhotoRequired) -> ApiError:
    return Conflict(_PHOTO_MISSING.get(exc.status, _PHOTO_MISSING[None]), code="photo_required",
                    details={"photo_status": exc.status})


def _photo_conflict(exc: PhotoConflict) -> ApiError:
    return Conflict(exc.message, code=exc.code, details=exc.details)


def _agreement_changed(exc: AgreementVersionChanged) -> ApiError:
    return Conflict("网上报名协议已更新，请阅读新版本后重新确认", code="agreement_version_changed",
                    details={"version": exc.current})


def _agreement_required(exc: AgreementRequired) -> ApiError:
    return Conflict("网上报名协议已更新，请先阅读并同意新版本", code="agreement_required",
                    details={"version": exc.current, "accepted": exc.accepted})


def _reset_invalid(exc: ResetInvalid) -> ApiError:
    return ApiError("找回密码请求无效、已过期或答案错误", code="reset_invalid", status=400)


def _attempts_exhausted(exc: AttemptsExhausted) -> ApiError:
    return ApiError("答案错误次数过多，请重新找回密码", code="reset_attempts_exhausted", status=400)


def _code_invalid(exc: CodeInvalid) -> ApiError:
    return ApiError("短信验证码错误或已失效", code="code_invalid", status=400)


def _password_rejected(exc: PasswordRejected) -> ApiError:
    return ValidationFailed({"new_password": exc.reason}, "新密码不符合要求")


def _password_incorrect(exc: PasswordIncorrect) -> ApiError:
    return Forbidden("密码错误，请重新输入", code="password_incorrect")


def _record_refused(exc: RecordRefused) -> ApiError:
    return Conflict(exc.message, code=exc.code, details=exc.details)


def _send_throttled(exc: SendThrottled) -> ApiError:
    return ApiError("短信发送过于频繁，请稍后再试", code="too_many_requests", status=429,
                    retry_after_s=exc.retry_after_s,
                    details={"retry_after_s": exc.retry_after_s, "rules": [], "reason": "sms_per_phone"})


def _registration_invalid(exc: RegistrationInvalid) -> ApiError:
    return ValidationFailed(exc.fields, "报名信息有误，请检查后重试")


def _registration_closed(exc: RegistrationClosed) -> ApiError:
    return ApiError("当前不在报名时间内", code="registration_closed", status=403,
                    details={"exam_id": exc.exam_id, "opens_at": iso_local(exc.opens_at),
                             "closes_at": iso_local(exc.closes_at)})


def _already_registered(exc: AlreadyRegistered) -> ApiError:
    details: dict[str, Any] = {"exam_id": exc.exam_id}
    if exc.registration_id is not None:
        details["registration_id"] = exc.registration_id
    return Conflict("您已报名该考试，请勿重复报名", code="already_registered", details=details)


def _transition_refused(exc: TransitionRefused) -> ApiError:
    return Conflict(exc.message, code=exc.code, details={"registration_id": exc.registration_id,
                                                         "status": exc.status, "action": exc.action})


def _commitment_required(exc: CommitmentRequired) -> ApiError:
    return Conflict("请先阅读并签署告知承诺书，再确认报名信息", code="commitment_required",
                    details={"registration_id": exc.registration_id})


def _commitment_not_allowed(exc: CommitmentNotAllowed) -> ApiError:
    if exc.reason == "integrity_record":
        message = "您在诚信档案库记录期内，不能使用告知承诺制，请按一般程序提交资格审核"
    else:
        message = "本地区未实行告知承诺制，请按一般程序提交资格审核"
    details: dict[str, Any] = {"reason": exc.reason}
    if exc.record is not None:
        details["until"] = exc.record["until"]
    return ApiError(message, code="commitment_not_allowed", status=403, details=details)


def _stale_version(exc: StaleVersion) -> ApiError:
    return ApiError("该报名已被修改或处理，请刷新后再审核", code="precondition_failed", status=412,
                    details={"registration_id": exc.registration_id, "version": exc.current})


def _major_mismatch(exc: MajorMismatch) -> ApiError:
    return ApiError(f"所学专业“{exc.major}”不在该级别的专业目录内，属其他专业；确认继续报名须自行承担不符合条件的后果",
                    code="major_mismatch_unacknowledged", status=422,
                    details={"major": exc.major, "majors_same": exc.same, "majors_related": exc.related})


def _rules_invalid(exc: RulesInvalid) -> ApiError:
    return ValidationFailed(exc.fields, "资格条件格式不正确")


def _document_version(exc: DocumentVersionMismatch) -> ApiError:
    return Conflict("告知承诺书已更新，请重新阅读后签署", code="document_version_changed",
                    details={"kind": exc.kind, "version": exc.current})


def _not_approved(exc: NotApproved) -> ApiError:
    return Conflict("资格审核通过后才能选择考点和缴费", code="not_approved", details={"status": exc.status})


def _refund_invalid(exc: RefundInvalid) -> ApiError:
    return Conflict("该订单无法退款（没有可退的支付记录），请核对后处理", code="refund_not_possible",
                    details={"reason": exc.reason})


def _no_seat_right(exc: NoSeatRight) -> ApiError:
    return Conflict("资格审核通过后才能选择考点", code="not_approved", details={"registration_id": exc.registration_id})


def _site_full(exc: SiteFull) -> ApiError:
    return Conflict("该考点座位已满，请选择其他考点", code="site_full", details={"site_id": exc.site_id})


def _seat_locked(exc: SeatLocked) -> ApiError:
    return Conflict("已缴费的报名不能更换或释放考点", code="seat_locked", details={"site_id": exc.site_id})


def _hold_contention(exc: HoldContention) -> ApiError:
    return Conflict("考点选择正在被同时修改，请稍后重试", code="hold_contention")


def _inventory_missing(exc: InventoryMissing) -> ApiError:
    return Overloaded("考点座位数据正在加载，请稍后重试", code="service_unavailable", retry_after_s=2,
                      details={"reason": "seat_inventory_loading", "site_id": exc.site_id})


def _hold_unconfirmed(exc: HoldUnconfirmed) -> ApiError:
    return Overloaded("座位保留尚未确认，请稍后重试", code="service_unavailable", retry_after_s=1,
                      details={"reason": "seat_hold_unconfirmed"})


def _site_not_found(exc: SiteNotFound) -> ApiError:
    return NotFoundError("该考试没有这个考点", code="site_not_found", details={"site_id": exc.site_id})


def _other_province(exc: OtherProvince) -> ApiError:
    return ValidationFailed({"site_id": "other_province"}, "只能选择报考省份的考点")


def _registration_inactive(exc: RegistrationInactive) -> ApiError:
    return Conflict("该报名已取消或过期，不能选择考点", code="registration_inactive", details={"status": exc.status})


def _admission_invalid(exc: AdmissionInvalid) -> ApiError:
    # One answer whatever the reason (forged, expired, someone else's): the reason is logged.
    return ApiError("请先排队，入场后再选择考点", code="admission_required", status=403)


def _place_not_found(exc: PlaceNotFound) -> ApiError:
    return NotFoundError("排队号不存在", code="queue_ticket_not_found", details={"exam_id": exc.exam_id})


def _place_expired(exc: PlaceExpired) -> ApiError:
    return ApiError("排队位置已失效（长时间未刷新），请重新排队", code="queue_place_expired", status=410,
                    details={"exam_id": exc.exam_id})


def _reconcile_error(exc: ReconcileError) -> ApiError:
    return Conflict("对账期间座位数据持续变化，请稍后重试", code="reconcile_contention",
                    details={"exam_id": exc.exam_id})


def _order_refused(exc: OrderRefused) -> ApiError:
    details: dict[str, Any] = {"registration_id": exc.registration_id}
    if exc.status is not None:
        details["status"] = exc.status
    return Conflict(exc.message, code=exc.code, details=details)


def _provider_unavailable(exc: ProviderUnavailable) -> ApiError:
    return Overloaded("支付平台暂时无法连接，请稍后重试", code="service_unavailable", retry_after_s=5,
                      details={"reason": "payment_provider_unavailable", "provider": exc.provider})


def _trade_paid(exc: TradeAlreadyPaid) -> ApiError:
    return Conflict("该订单已支付，正在确认支付结果，请稍后刷新", code="payment_processing")


def _provider_rejected(exc: ProviderRejected) -> ApiError:
    return Conflict("支付平台拒绝了该订单，请稍后重新下单", code="order_rejected_by_provider",
                    details={"provider": exc.provider, "reason": exc.code})


def _pdf_unavailable(exc: PdfError) -> ApiError:
    return Overloaded("准考证文件暂时无法生成，请稍后重试", code="service_unavailable", retry_after_s=30,
                      details={"reason": "ticket_pdf_unavailable"})


def _no_record(exc: NoRecord) -> ApiError:
    # One answer whether the id, the ticket number or the name is wrong.
    return NotFoundError("未查询到相关记录，请核对姓名和证件号码（或准考证号）", code="not_found")


def _too_early(exc: TooEarly) -> ApiError:
    """425 with the time in ``details``; Retry-After only when the time is ahead (at most a day)."""
    seconds = (exc.at - utcnow()).total_seconds()
    details: dict[str, str | None]  # the print window may have no end
    if exc.kind == "scores":
        message, code, details = "成绩尚未发布", "not_yet_released", {"release_at": iso_local(exc.at)}
    else:
        message, code = "当前不在准考证打印时间内", "not_yet_available"
        details = {"available_from": iso_local(exc.at),
                   "available_until": iso_local(exc.until) if exc.until is not None else None}
    return ApiError(message, code=code, status=425, details=details,
                    retry_after_s=min(seconds, 86400) if seconds > 0 else None)


def _lookups_busy(exc: LookupsBusy) -> ApiError:
    return Overloaded("查询人数较多，请稍后重试", code="overloaded", retry_after_s=1,
                      details={"reason": "lookup_fallback_full"})


def _invalid_operator(exc: InvalidOperator) -> ApiError:
    return ValidationFailed(exc.fields, "操作员信息有误，请检查后重试")


def _operator_not_found(exc: OperatorNotFound) -> ApiError:
    # Out of a provincial admin's scope answers the same: what it may not manage, it does not see.
    return NotFoundError("没有这个操作员账号", code="operator_not_found", details={"name": exc.name})


def _operator_exists(exc: OperatorExists) -> ApiError:
    return Conflict("该操作员名称已被使用，请换一个", code="operator_exists", details={"name": exc.name})


def _import_rejected(exc: ImportRejected) -> ApiError:
    rows = [{"line": line, "reason": reason} for line, reason in exc.rows]
    return ApiError(f"导入文件有 {exc.total} 行有误，未导入任何数据", code="import_rejected", status=422,
                    details={"rows": rows, "total": exc.total, "more": exc.more})


def _batch_conflict(exc: BatchConflict) -> ApiError:
    return Conflict("该批次号已用于另一份导入文件，请换一个批次号", code="batch_conflict",
                    details={"batch_id": exc.batch_id, "kind": exc.kind})


def _unknown_import_kind(exc: UnknownKind) -> ApiError:
    return NotFoundError("没有这种导入类型", code="import_kind_not_found", details={"kind": exc.kind})


def _import_content_type(exc: UnsupportedContentType) -> ApiError:
    if isinstance(exc, FormatNotAccepted):  # a kind taking one format only (exams: NDJSON)
        return UnsupportedMediaType(f"该导入类型只接受 {'、'.join(exc.accepted)} 文件",
                                    details={"expected": list(exc.accepted), "got": exc.content_type or None})
    return UnsupportedMediaType(details={"expected": ["text/csv", "application/x-ndjson"],
                                         "got": exc.content_type or None})


def _operator_disabled(exc: OperatorDisabled) -> ApiError:
    return Conflict("该操作员账号已停用，启用后才能签发令牌", code="operator_disabled", details={"name": exc.name})


def _token_not_found(exc: TokenNotFound) -> ApiError:
    return NotFoundError("该操作员没有这个令牌", code="token_not_found",
                         details={"name": exc.name, "token_id": exc.token_id})


def _out_of_scope(exc: OutOfScope) -> ApiError:
    return Forbidden("不能授予超出本人管辖范围的省份", code="scope_exceeded",
                     details={"provinces": sorted(exc.provinces) if exc.provinces is not None else None})


# The one table: package error class → the ApiError answered for it. Every package's
# errors are added here; more specific classes first, the first isinstance match wins.
ERROR_TABLE: list[tuple[type[BaseException], Callable[[Any], ApiError]]] = [
    (InvalidConfig, _invalid_config),
    (VersionMismatch, _version_mismatch),
    (ConfigCorrupt, _config_corrupt),
    (RateLimited, _rate_limited),
    (LimiterUnavailable, _limiter_unavailable),
    (StorageUnavailable, _storage_unavailable),
    (NotFound, _not_found),
    (CaptchaInvalid, _captcha_invalid),
    (CaptchaRequired, _captcha_required),
    (PoolEmpty, _pool_empty),
    (AccountConflict, _account_conflict),
    (PoolFull, _pool_full),
    (ImagePoolFull, _image_pool_full),
    (PhotoLocked, _photo_locked),
    (PhotoRequired, _photo_required),
    (AgreementVersionChanged, _agreement_changed),
    (AgreementRequired, _agreement_required),
    (PhotoConflict, _photo_conflict),
    (ResetInvalid, _reset_invalid),
    (AttemptsExhausted, _attempts_exhausted),
    (CodeInvalid, _code_invalid),
    (PasswordRejected, _password_rejected),
    (PasswordIncorrect, _password_incorrect),
    (RecordRefused, _record_refused),
    (SendThrottled, _send_throttled),
    (RegistrationInvalid, _registration_invalid),
    (RegistrationClosed, _registration_closed),
    (AlreadyRegistered, _already_registered),
    (TransitionRefused, _transition_refused),
    (CommitmentRequired, _commitment_required),
    (CommitmentNotAllowed, _commitment_not_allowed),
    (StaleVersion, _stale_version),
    (MajorMismatch, _major_mismatch),
    (RulesInvalid, _rules_invalid),
    (DocumentVersionMismatch, _document_version),
    (NoSeatRight, _no_seat_right),
    (RefundInvalid, _refund_invalid),
    (NotApproved, _not_approved),
    (SiteFull, _site_full),
    (SeatLocked, _seat_locked),
    (HoldContention, _hold_contention),
    (InventoryMissing, _inventory_missing),
    (HoldUnconfirmed, _hold_unconfirmed),
    (AdmissionInvalid, _admission_invalid),
    (SiteNotFound, _site_not_found),
    (OtherProvince, _other_province),
    (RegistrationInactive, _registration_inactive),
    (PlaceNotFound, _place_not_found),
    (PlaceExpired, _place_expired),
    (ReconcileError, _reconcile_error),
    (OrderRefused, _order_refused),
    (LookupsBusy, _lookups_busy),
    (NoRecord, _no_record),
    (TooEarly, _too_early),
    (PdfError, _pdf_unavailable),
    (ProviderUnavailable, _provider_unavailable),
    (TradeAlreadyPaid, _trade_paid),
    (ProviderRejected, _provider_rejected),
    (InvalidOperator, _invalid_operator),
    (OperatorNotFound, _operator_not_found),
    (OperatorExists, _operator_exists),
    (OperatorDisabled, _operator_disabled),
    (TokenNotFound, _token_not_found),
    (OutOfScope, _out_of_scope),
    (ImportRejected, _import_rejected),
    (BatchConflict, _batch_conflict),
    (UnknownKind, _unknown_import_kind),
    (UnsupportedContentType, _import_content_type),
]


def translate(exc: BaseException) -> ApiError | None:
    """The ApiError for a package error, or None when the error is not a known one."""
    if isinstance(exc, ApiError):
        return exc
    for error_class, build in ERROR_TABLE:
        if isinstance(exc, error_class):
            return build(exc)
    if isinstance(exc, CoreError):
        return ApiError("服务处理失败，请稍后重试", code="internal_error", status=500)
    return None


# aiohttp's own HTTP exceptions (raised by routing and body reading) in the same shape.
HTTP_EXCEPTION_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "请求无效"),
    404: ("not_found", "未找到相关记录"),
    405: ("method_not_allowed", "不支持该请求方法"),
    413: ("body_too_large", "请求内容过大"),
    415: ("unsupported_media_type", "请求内容类型不受支持"),
}

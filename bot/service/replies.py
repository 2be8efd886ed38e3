"""The Korean copy of the conversation, shared by every front end: answers that could not be written, refused
buttons, busy users, /reset, /forget, /reload and /status. Copy that only one front end needs (Telegram's greeting
and buttons, the terminal's y/N lines) lives with it; the taste copy is bot/taste/replies.py.

Particles after a word we do not know in advance come from bot.korean.with_particle.
"""

from __future__ import annotations

from typing import Any

from bot.korean import with_particle

# --- answers ------------------------------------------------------------------------------------------------------
FAILED_TEXT = "답변을 만들다가 문제가 생겼어요. 잠시 후 다시 시도해 주세요."
EMPTY_TEXT = "음… 딱 떠오르는 메뉴가 없네요. '다른 거'를 눌러 다시 골라 볼까요?"
TRUNCATED_NOTICE = "질문이 너무 길어서 앞부분만 읽었어요."
FORGOTTEN_TEXT = "기록을 지우는 사이에 받은 질문이라, 답하지 않고 함께 지웠어요. 다시 물어봐 주세요."
BUSY = "지금 주문이 밀려 있어요 🙏 질문은 받아 두었어요. 잠시 후에 다시 보내 주세요."
TOO_MANY_WAITING = "아직 앞의 질문들에 답하는 중이에요. 답을 받은 뒤에 다시 보내 주세요."

# --- buttons ------------------------------------------------------------------------------------------------------
REFUSED_UNKNOWN = "그 답변은 찾을 수 없어요. 새로 질문해 주세요."
REFUSED_STALE = "가장 최근 답변만 다시 고를 수 있어요."
REFUSED_STATUS = "이미 다시 고른 답변이에요. 새 답변에서 '다른 거'를 눌러 주세요."
REFUSED_VOTE = "이 답변에는 평가를 남길 수 없어요."

# --- commands -----------------------------------------------------------------------------------------------------
HELP_HINT = "그 명령은 몰라요. 쓸 수 있는 명령은 /help 에서 볼 수 있어요."
RESET_DONE = "새 대화를 시작했어요. 이전 이야기는 빼고 처음부터 추천해 드릴게요."
FORGET_ASK = "지금까지 저장된 내 대화 기록과 입맛 기록을 모두 지울까요? 지우면 되돌릴 수 없어요."
FORGET_CANCELLED = "취소했어요. 기록은 그대로 있어요."
ADMIN_ONLY = "관리자만 쓸 수 있는 명령이에요."
RELOAD_USAGE = "불러올 어댑터 이름을 적어 주세요: /reload <이름> (어댑터 폴더 안의 폴더)"
RELOAD_BROKEN = "어댑터 폴더가 비어 있거나 손상됐거나, 이 모델용이 아니에요. 자세한 내용은 서버 로그에 남겼어요."
RELOAD_ERROR = "불러오는 중에 예상하지 못한 문제가 생겼어요. 자세한 내용은 서버 로그에 남겼어요."


def too_soon(wait_s: float) -> str:
    return f"조금만 천천히 보내 주세요. {max(1, round(wait_s))}초 뒤에 다시 보내 주시면 바로 답할게요."


def forgotten(deleted: int) -> str:
    return f"저장된 기록 {deleted}개를 모두 지웠어요. 언제든 다시 물어보세요."


def quoted(name: str) -> str:
    return f"'{name[:40]}'"


def reload_started(name: str) -> str:
    return f"어댑터 {with_particle(quoted(name), '을')} 불러오는 중이에요…"


def reload_done(name: str | None, version: str, seconds: float) -> str:
    return f"어댑터 '{name}' 준비 완료 ✅ 불러오는 데 {seconds:.2f}초 (버전 {version})"


def reload_failed(name: str, serving: str, version: str | None, reason: str) -> str:
    """`serving`: what keeps serving, as a phrase ("'v2'" or "기본 모델")."""
    kept = f"지금 쓰던 {with_particle(serving, '을')} 계속 써요" + (f" (버전 {version})." if version else ".")
    return f"어댑터 {with_particle(quoted(name), '을')} 불러오지 못했어요. {kept}\n이유: {reason}"


def format_status(status: dict[str, Any]) -> str:
    """/status for an admin, from ConversationService.status()."""
    generator = status.get("generator", {})
    adapter = generator.get("adapter") or {}
    adapter_text = f"{adapter['name']} (버전 {adapter.get('version')})" if adapter.get("name") else "없음 (기본 모델)"
    uptime = int(status.get("uptime_s", 0))
    hours, rest = divmod(uptime, 3600)
    return "\n".join([
        "📊 메추리 상태",
        f"모델: {generator.get('base', '?')}",
        f"어댑터: {adapter_text}",
        f"양자화: {generator.get('quantization', '?')} · {generator.get('device', '?')} · {generator.get('dtype', '?')}",
        f"대기열: {generator.get('queue_length', '?')} (생성 중 {generator.get('running', '?')}, "
        f"최대 배치 {generator.get('max_batch_size', '?')})",
        f"답변 중: {status.get('in_flight', '?')} · 대기 중인 메시지: {status.get('waiting', '?')} · "
        f"지금까지 답한 수: {status.get('answered', '?')}",
        f"가동 시간: {hours}시간 {rest // 60}분 {rest % 60}초",
    ])

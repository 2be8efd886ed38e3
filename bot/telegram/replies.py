"""The Korean copy only the Telegram front end shows: the greeting, /help, access, buttons and vote toasts. The
copy every front end shares is bot/service/replies.py; the taste copy is bot/taste/replies.py."""

from __future__ import annotations

GREETING = (
    "안녕하세요! 메뉴 고민을 덜어 드리는 메추리예요 🐦\n"
    "오늘 뭐 먹을지 편하게 물어보세요. 이렇게요:\n"
    "• 매운 요리 추천해줘\n"
    "• 비 오는 날 뭐 먹지\n"
    "• 혼자 먹기 좋은 저녁 메뉴 알려줘\n\n"
    "추천이 마음에 안 들면 🔄 다른 거 를 눌러 주세요. 도움말은 /help 예요."
)
HELP = (
    "메추리는 먹고 싶은 분위기를 말하면 메뉴를 골라 드려요.\n\n"
    "/start 인사와 예시 질문\n/help 이 도움말\n/reset 새 대화 시작 (이전 이야기는 참고하지 않아요)\n"
    "/taste 내 입맛(알레르기·식단·싫어하는 것) 보기와 고치기\n"
    "/forget 저장된 내 대화 기록과 입맛 기록 모두 삭제\n\n"
    "\"나 새우 알레르기 있어\", \"오이 싫어해\"처럼 말해 주시면 기억해 둘지 여쭤보고, 다음 추천부터 반영해요.\n"
    "{feedback}단체방에서는 @{username} 을 붙이거나 제 메시지에 답장으로 물어봐 주세요."
)
FEEDBACK_HELP = "답변 아래 👍/👎를 눌러 주시면 더 좋은 추천을 고르는 데 참고해요.\n"
NOT_ALLOWED = "죄송해요, 이 봇은 초대받은 분들만 쓸 수 있어요."
NON_TEXT = "사진이나 스티커, 음성은 아직 볼 줄 몰라요. 먹고 싶은 걸 글로 적어 주시면 메뉴를 골라 드릴게요 🍚"
EMPTY_MENTION = "네, 부르셨어요? 어떤 음식이 당기는지 말씀해 주세요."
NOT_YOURS = "본인만 누를 수 있는 버튼이에요."
BAD_BUTTON = "이 버튼은 처리할 수 없어요. 새로 질문해 주세요."
SORRY = "앗, 문제가 생겼어요. 잠시 후 다시 시도해 주세요."
INTERRUPTED_NOTICE = "“{question}”에 답하다가 멈췄어요 🙏 다시 보내 주시면 바로 답할게요."

THANKS_UP = "고마워요! 다음 추천에 참고할게요."
THANKS_DOWN = "아쉬워요. '다른 거'를 누르면 다른 메뉴를 골라 드릴게요."
THANKS_DOWN_NO_RETRY = "아쉬워요. 알려 주셔서 고마워요. 다음 추천에 참고할게요."
ALREADY_COUNTED = "이미 반영했어요."
FEEDBACK_OFF = "지금은 평가를 받지 않고 있어요. 마음에 들지 않으면 새로 물어봐 주세요."

ALLERGY_PROMPT = "알레르기가 있는 재료를 눌러 켜고 끄세요. 켠 재료가 든 메뉴는 절대 추천하지 않아요."
DIET_PROMPT = "식단을 눌러 켜고 끄세요. 맞지 않는 메뉴는 되도록 피해서 추천해요."
ITEM_GONE = "이미 지워진 항목이에요."
BUTTONS_HINT = "아래 버튼으로 알레르기와 식단을 고르고, 싫어하는 것과 좋아하는 것을 지울 수 있어요."

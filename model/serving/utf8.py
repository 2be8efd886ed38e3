"""Never a broken character: which tokens keep an answer's bytes a valid UTF-8 prefix.

A byte-level BPE model can emit a token that starts a three-byte Hangul syllable and then one that does not finish
it; the text then shows U+FFFD (�). Every model we serve can do this, the real KoAlpaca included. So sampling only
allows tokens whose bytes continue the answer as valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
above U+10FFFF), and U+FFFD itself is refused too.

The state of a row is what the next bytes must be; there are ten states. For each state and token the table holds
whether the token is allowed and the state after it, so the mask is one gather per step on the device, with no host
sync, inside the fixed-shape decode step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# States: what the next byte must be.
BOUNDARY = 0  # a character is complete: any lead byte or ASCII
NEED1 = 1  # one continuation byte (80-BF)
NEED2 = 2  # two continuation bytes, the first 80-BF
NEED2_E0 = 3  # after E0: first continuation A0-BF (no overlong forms)
NEED2_ED = 4  # after ED: first continuation 80-9F (no surrogates)
NEED3 = 5  # after F1-F3
NEED3_F0 = 6  # after F0: first continuation 90-BF
NEED3_F4 = 7  # after F4: first continuation 80-8F (nothing above U+10FFFF)
NEED2_EF = 8  # after EF: as NEED2, but EF BF BD is U+FFFD, the replacement character itself
NEED1_EFBF = 9  # after EF BF: any continuation but BD
STATES = 10
INVALID = -1


def step(state: int, byte: int) -> int:
    """The state after one byte, or INVALID."""
    if state == BOUNDARY:
        if byte < 0x80:
            return BOUNDARY
        if 0xC2 <= byte <= 0xDF:
            return NEED1
        if byte == 0xE0:
            return NEED2_E0
        if byte == 0xED:
            return NEED2_ED
        if byte == 0xEF:
            return NEED2_EF
        if 0xE1 <= byte <= 0xEF:
            return NEED2
        if byte == 0xF0:
            return NEED3_F0
        if 0xF1 <= byte <= 0xF3:
            return NEED3
        if byte == 0xF4:
            return NEED3_F4
        return INVALID  # 80-C1 and F5-FF never start a character
    low, high, after = {
        NEED1: (0x80, 0xBF, BOUNDARY),
        NEED2: (0x80, 0xBF, NEED1),
        NEED2_E0: (0xA0, 0xBF, NEED1),
        NEED2_ED: (0x80, 0x9F, NEED1),
        NEED3: (0x80, 0xBF, NEED2),
        NEED3_F0: (0x90, 0xBF, NEED2),
        NEED3_F4: (0x80, 0x8F, NEED2),
        NEED2_EF: (0x80, 0xBF, NEED1),
        NEED1_EFBF: (0x80, 0xBF, BOUNDARY),
    }[state]
    if not low <= byte <= high or (state == NEED1_EFBF and byte == 0xBD):
        return INVALID
    return NEED1_EFBF if state == NEED2_EF and byte == 0xBF else after


def feed(state: int, data: bytes) -> int:
    for byte in data:
        state = step(state, byte)
        if state == INVALID:
            break
    return state


class Utf8Table:
    """`allowed[state, token]` and `after[state, token]` for a vocabulary, on the device.

    `token_bytes[i]` are the bytes token i adds to the answer. Tokens listed in `boundary_only` (EOS) end or
    interrupt nothing only at a character boundary; their state afterwards is the boundary.
    """

    def __init__(self, token_bytes: Sequence[bytes], vocab_rows: int, device: torch.device | str,
                 boundary_only: Sequence[int] = ()) -> None:
        allowed = torch.zeros((STATES, vocab_rows), dtype=torch.bool)
        after = torch.zeros((STATES, vocab_rows), dtype=torch.long)
        cache: dict[bytes, list[int]] = {}  # many tokens share their bytes' outcome (e.g. the empty ones)
        for token, data in enumerate(token_bytes):
            outcome = cache.get(data)
            if outcome is None:
                if data and not 0x80 <= data[0] <= 0xBF:  # not a continuation byte: valid at a boundary only
                    outcome = [feed(BOUNDARY, data)] + [INVALID] * (STATES - 1)
                else:
                    outcome = [feed(state, data) for state in range(STATES)]
                cache[data] = outcome
            for state, end in enumerate(outcome):
                if end != INVALID:
                    allowed[state, token], after[state, token] = True, end
        for token in boundary_only:
            allowed[:, token] = False
            allowed[BOUNDARY, token], after[:, token] = True, BOUNDARY
        self.allowed = allowed.to(device)
        self.after = after.to(device)

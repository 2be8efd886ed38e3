"""`mechuri dataset feedback`: chains built by the real ConversationService (fake generator) on a real database,
exported as TRL DPO/KTO JSONL, loaded with `datasets` and fed to TRL's DPOTrainer."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from bot_fixtures import service_on
from databases import SqliteDatabase
from fakes import FakeCatalog, FakeGenerator
from sqlalchemy.exc import SQLAlchemyError

from bot.feedback.export import ExportOptions, FeedbackExportError, export_feedback
from bot.store.database import run_upgrade
from bot.store.feedback import open_readonly
from mechuri.cli import main

DISHES = ["짬뽕", "짜장면", "탕수육", "김치찌개", "비빔밥", "냉면"]
# Distinctive, so that grepping the exported bytes for them cannot hit by chance.
USER, CHAT, NAME = 731_904_226, 564_738_291, "감자도리Qx"
OTHER_USER, OTHER_NAME = 802_113_957, "고구마Zy"
SEED_BASE = 987_650_001
DPO_COLUMNS = {"prompt", "chosen", "rejected", "adapter_version"}
KTO_COLUMNS = {"prompt", "completion", "label", "adapter_version"}


def service(db, gen: FakeGenerator):
    seeds = itertools.count(SEED_BASE)
    return service_on(db, gen, catalog=FakeCatalog(DISHES), seed_source=lambda: next(seeds))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(db, tmp_path: Path, name: str = "prefs.jsonl", **options):
    eval_out = options.pop("eval_out", None)
    out = tmp_path / name
    report = export_feedback(db.url, out, eval_out=eval_out, options=ExportOptions(**options))
    return read(out), report


@pytest.fixture
def db(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase.fresh(tmp_path)


async def test_retries_then_moving_on_give_one_pair_per_turned_down_answer(database, tmp_path: Path) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?", "탕수육 어때요?", "냉면 어때요?"])
    async with service(database, gen) as svc:
        first = await svc.reply(CHAT, USER, "중식 추천해줘", user_name=NAME)
        second = await svc.retry(CHAT, USER, first.turn_id)
        await svc.retry(CHAT, USER, second.turn_id)
        await svc.reply(CHAT, USER, "시원한 건?")  # moves on; its answer is unvoted in an open conversation
    assert "짬뽕" in gen.prompts[1] and gen.prompts[1] != gen.prompts[0]  # retries' prompts list turned-down dishes
    rows, report = export(database, tmp_path)
    assert rows == [
        {"prompt": gen.prompts[0], "chosen": " 탕수육 어때요?", "rejected": " 짬뽕 어때요?", "adapter_version": "base"},
        {"prompt": gen.prompts[0], "chosen": " 탕수육 어때요?", "rejected": " 짜장면 어때요?", "adapter_version": "base"},
    ]
    assert gen.prompts[0].endswith("### 답변:")
    assert report.rows == {str(tmp_path / "prefs.jsonl"): 2} and report.open == 1 and report.chains == 2
    assert dict(report.kinds) == {"retry": 2, "moved_on": 1} and dict(report.adapter_versions) == {"base": 2}
    # Nothing that identifies a person, a chat, a turn or a seed.
    raw = (tmp_path / "prefs.jsonl").read_bytes()
    for secret in (USER, CHAT, NAME, *range(SEED_BASE, SEED_BASE + 5)):
        assert str(secret).encode() not in raw, secret
    assert all(not isinstance(v, int) for row in rows for v in row.values())


async def test_an_empty_answer_is_left_out_and_its_chain_kept(database, tmp_path: Path) -> None:
    # The model said nothing (the user saw EMPTY_TEXT and pressed "다른 거"): nothing to learn from that answer, but
    # the chain's prompt is still the first one and the other turned-down answer still pairs with the kept one.
    gen = FakeGenerator(["", "짬뽕 어때요?", "탕수육 어때요?"])
    async with service(database, gen) as svc:
        first = await svc.reply(CHAT, USER, "중식 추천해줘", user_name=NAME)
        second = await svc.retry(CHAT, USER, first.turn_id)
        await svc.retry(CHAT, USER, second.turn_id)
        await svc.reset(CHAT, USER)
    rows, report = export(database, tmp_path)
    assert rows == [{"prompt": gen.prompts[0], "chosen": " 탕수육 어때요?", "rejected": " 짬뽕 어때요?",
                     "adapter_version": "base"}]
    assert report.partial == 0


async def test_votes_and_open_chains(database, tmp_path: Path) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?", "냉면 어때요?", "비빔밥 어때요?"])
    async with service(database, gen) as svc:
        q1 = await svc.reply(CHAT, USER, "중식 추천해줘", user_name=NAME)
        q1b = await svc.retry(CHAT, USER, q1.turn_id)
        q2 = await svc.reply(CHAT, USER, "시원한 건?")
        q3 = await svc.reply(CHAT, USER, "점심은?")  # open conversation, last question: decided only by a vote
        now = datetime.now(UTC)
        await svc.store.update_turn(q1b.turn_id, vote="up", voted_at=now)
        await svc.store.update_turn(q2.turn_id, vote="down", voted_at=now)
        await svc.store.update_turn(q3.turn_id, vote="up", voted_at=now)
    dpo, report = export(database, tmp_path)
    assert [(r["chosen"], r["rejected"]) for r in dpo] == [(" 짜장면 어때요?", " 짬뽕 어때요?")]
    # q2: 👎 and the user moved on, so nothing was chosen; q3: a lone 👍 has no pair.
    assert report.no_chosen == 1 and report.open == 0 and dict(report.kinds) == {"up": 1, "retry": 1}
    kto, report = export(database, tmp_path, "kto.jsonl", format="kto")
    assert [(r["completion"], r["label"]) for r in kto] == [
        (" 짬뽕 어때요?", False), (" 짜장면 어때요?", True), (" 냉면 어때요?", False), (" 비빔밥 어때요?", True)]
    assert kto[0]["prompt"] == kto[1]["prompt"] == gen.prompts[0] and kto[2]["prompt"] == gen.prompts[2]
    assert dict(report.kinds) == {"up": 2, "retry": 1, "down": 1}

    # Without the 👍 the latest answer of the open conversation is still open: not exported, counted.
    async with service(database, gen) as svc:
        await svc.store.update_turn(q3.turn_id, vote=None, voted_at=None)
    kto, report = export(database, tmp_path, "kto.jsonl", format="kto")
    assert " 비빔밥 어때요?" not in [r["completion"] for r in kto] and report.open == 1


async def test_partial_and_weird_chains_are_counted_not_crashed_on(db, tmp_path: Path) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?", "냉면 어때요?", "비빔밥 어때요?", "탕수육 어때요?"])
    async with service(db, gen) as svc:
        old = await svc.reply(CHAT, USER, "중식 추천해줘", user_name=NAME)
        old_retry = await svc.retry(CHAT, USER, old.turn_id)
        weird = await svc.reply(CHAT, USER, "시원한 건?")
        weird_retry = await svc.retry(CHAT, USER, weird.turn_id)
        await svc.reply(CHAT, USER, "점심은?")
        # As rows written before migration 0003: no prompt, no completion.
        for turn_id in (old.turn_id, old_retry.turn_id):
            await svc.store.update_turn(turn_id, prompt=None, completion=None)
        # 👍 on an answer that was then turned down: it counts as turned down.
        await svc.store.update_turn(weird.turn_id, vote="up")
        await svc.store.update_turn(weird_retry.turn_id, vote="up")
    rows, report = export(db, tmp_path)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [(" 비빔밥 어때요?", " 냉면 어때요?")]
    assert report.partial == 1 and report.conflicting == 1 and report.open == 1


async def test_identical_rows_are_written_once(db, tmp_path: Path) -> None:
    gen = FakeGenerator(lambda prompt, seed: "짜장면 어때요?" if "짬뽕" in prompt else "짬뽕 어때요?")
    async with service(db, gen) as svc:
        for user, name in ((USER, NAME), (OTHER_USER, OTHER_NAME)):
            first = await svc.reply(CHAT, user, "중식 추천해줘", user_name=name)
            await svc.retry(CHAT, user, first.turn_id)
            await svc.reset(CHAT, user)  # a closed conversation: the kept answer is chosen
    assert gen.prompts[0] == gen.prompts[2]
    rows, report = export(db, tmp_path)
    assert len(rows) == 1 and report.duplicates == 1
    rows, report = export(db, tmp_path, format="kto")
    assert len(rows) == 2 and report.duplicates == 2
    raw = (tmp_path / "prefs.jsonl").read_bytes()
    assert OTHER_NAME.encode() not in raw and str(OTHER_USER).encode() not in raw


async def test_since_adapter_version_and_min_pairs(database, tmp_path: Path) -> None:
    gen = FakeGenerator(list(itertools.chain.from_iterable(
        [f"{a} 어때요?", f"{b} 어때요?", f"{c} 어때요?"] for a, b, c in [DISHES[:3], DISHES[3:], DISHES[1:4]])))
    async with service(database, gen) as svc:
        chains = []
        for question in ("중식 추천해줘", "시원한 건?"):
            first = await svc.reply(CHAT, USER, question, user_name=NAME)
            second = await svc.retry(CHAT, USER, first.turn_id)
            chains.append([first, second, await svc.retry(CHAT, USER, second.turn_id)])
        new = await gen.reload_adapter(tmp_path / "adapters" / "v2")
        first = await svc.reply(CHAT, USER, "점심은?")
        chains.append([first, await svc.retry(CHAT, USER, first.turn_id)])
        await svc.reset(CHAT, USER)
        for answer in chains[0]:  # the first chain happened long ago
            await svc.store.update_turn(answer.turn_id, created_at=datetime(2020, 5, 1, 12, tzinfo=UTC))
        # One chain's kept answer comes from the new adapter: a mixed pair, left out by --adapter-version.
        await svc.store.update_turn(chains[1][2].turn_id, adapter_version=new.version)
    rows, report = export(database, tmp_path)
    assert len(rows) == 2 + 2 + 1 and report.adapter_versions == {"base": 2, "mixed": 2, new.version: 1}
    rows, report = export(database, tmp_path, since=date(2021, 1, 1))
    assert len(rows) == 3 and report.filtered == 2 and gen.prompts[0] not in {r["prompt"] for r in rows}
    rows, report = export(database, tmp_path, adapter_version=new.version)
    assert rows == [{"prompt": gen.prompts[6], "chosen": f" {DISHES[2]} 어때요?", "rejected": f" {DISHES[1]} 어때요?",
                     "adapter_version": new.version}]
    rows, report = export(database, tmp_path, min_pairs=2)
    assert len(rows) == 4 and report.below_min_pairs == 1
    rows, report = export(database, tmp_path, format="kto", min_pairs=3)
    assert {r["prompt"] for r in rows} == {gen.prompts[0], gen.prompts[3]} and report.below_min_pairs == 2


async def test_held_out_split_keeps_each_prompt_on_one_side(db, tmp_path: Path) -> None:
    counter = itertools.count()
    gen = FakeGenerator(lambda prompt, seed: f"{DISHES[next(counter) % len(DISHES)]} 어때요?")
    async with service(db, gen) as svc:
        for i in range(24):
            first = await svc.reply(CHAT, USER, f"{i}번째 메뉴 추천해줘", user_name=NAME)
            await svc.retry(CHAT, USER, first.turn_id)
            await svc.reset(CHAT, USER)
    rows, report = export(db, tmp_path, format="kto", eval_out=tmp_path / "heldout.jsonl", eval_fraction=0.3)
    heldout = read(tmp_path / "heldout.jsonl")
    train_prompts, eval_prompts = {r["prompt"] for r in rows}, {r["prompt"] for r in heldout}
    assert train_prompts and eval_prompts and not train_prompts & eval_prompts
    assert len(train_prompts | eval_prompts) == 24 and len(rows) + len(heldout) == 48
    assert report.rows == {str(tmp_path / "prefs.jsonl"): len(rows), str(tmp_path / "heldout.jsonl"): len(heldout)}
    again, _ = export(db, tmp_path, "again.jsonl", format="kto", eval_out=tmp_path / "h2.jsonl", eval_fraction=0.3)
    assert again == rows  # deterministic


async def test_the_file_loads_with_datasets_and_trains_one_dpo_and_one_kto_step(db, tmp_path: Path, tiny_model_dir: Path,
                                                                    one_torch_thread) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?", "냉면 어때요?", "비빔밥 어때요?"])
    async with service(db, gen) as svc:
        for question in ("중식 추천해줘", "시원한 건?"):
            first = await svc.reply(CHAT, USER, question, user_name=NAME)
            await svc.retry(CHAT, USER, first.turn_id)
        await svc.reset(CHAT, USER)
    export(db, tmp_path, "dpo.jsonl")
    export(db, tmp_path, "kto.jsonl", format="kto")
    from datasets import load_dataset

    dpo = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train")
    kto = load_dataset("json", data_files=str(tmp_path / "kto.jsonl"), split="train")
    assert set(dpo.column_names) == DPO_COLUMNS and dpo.num_rows == 2
    assert set(kto.column_names) == KTO_COLUMNS and kto.num_rows == 4 and kto["label"] == [False, True] * 2

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                       save_strategy="no", logging_steps=1, use_cpu=True, max_length=256, dataset_num_proc=None)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dpo, processing_class=tokenizer)
    # The completion starts right after the prompt: the stored prompt + " answer" tokenizes as in training.
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["prompt_ids"]) == dpo[0]["prompt"]
    assert tokenizer.decode(first["chosen_ids"]).startswith(dpo[0]["chosen"])
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0

    from trl import KTOConfig, KTOTrainer

    config = KTOConfig(output_dir=str(tmp_path / "kto"), max_steps=1, per_device_train_batch_size=4, report_to=[],
                       save_strategy="no", use_cpu=True, max_length=256, dataset_num_proc=None)
    trainer = KTOTrainer(model=model, args=config, train_dataset=kto, processing_class=tokenizer)
    assert tokenizer.decode(trainer.train_dataset[0]["prompt_ids"]) == kto[0]["prompt"]
    assert trainer.train().global_step == 1


def test_the_export_cannot_write(database) -> None:
    engine = open_readonly(database.url)
    try:
        with engine.connect() as conn:
            if database.kind == "sqlite":
                assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
            else:
                assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
            with pytest.raises(SQLAlchemyError):
                conn.exec_driver_sql("DELETE FROM turns")
    finally:
        engine.dispose()


def test_a_database_before_migration_0003_gets_the_fix(tmp_path: Path, capsys) -> None:
    path = tmp_path / "old.db"
    run_upgrade(f"sqlite+aiosqlite:///{path}", "0002")
    with pytest.raises(FeedbackExportError, match="mechuri db upgrade"):
        export_feedback(f"sqlite+aiosqlite:///{path}", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    code = main(["dataset", "feedback", "--database-url", f"sqlite+aiosqlite:///{path}", "--out",
                 str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "migration 0003" in err and "`mechuri db upgrade`" in err and "Traceback" not in err
    # A missing file is a wrong URL, not an empty history: it is not created.
    code = main(["dataset", "feedback", "--database-url", f"sqlite:///{tmp_path / 'nope.db'}", "--out",
                 str(tmp_path / "out.jsonl")])
    assert code == 1 and "no database at" in capsys.readouterr().err and not (tmp_path / "nope.db").exists()
    # An unreachable server: the message masks the password.
    code = main(["dataset", "feedback", "--database-url", "postgresql+asyncpg://bot:hunter2pw@127.0.0.1:1/x",
                 "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "hunter2pw" not in err and "bot:***@127.0.0.1:1" in err


async def test_cli_end_to_end(db, tmp_path: Path, capsys, monkeypatch) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?"])
    async with service(db, gen) as svc:
        first = await svc.reply(CHAT, USER, "중식 추천해줘", user_name=NAME)
        await svc.retry(CHAT, USER, first.turn_id)
        await svc.reset(CHAT, USER)
    monkeypatch.setenv("MECHURI_DATABASE_URL", db.url)  # the default, as for the other bot commands
    out, heldout = tmp_path / "out" / "prefs.jsonl", tmp_path / "out" / "heldout.jsonl"
    code = main(["dataset", "feedback", "--out", str(out), "--format", "dpo", "--since", "2020-01-01",
                 "--min-pairs", "1", "--eval-out", str(heldout), "--eval-fraction", "0.5"])
    printed = capsys.readouterr().out
    assert code == 0 and len(read(out)) + len(read(heldout)) == 1
    assert f"-> {out}" in printed and f"-> {heldout}" in printed and '"다른 거" 1' in printed
    assert "moved-on chosen 1" in printed and "base 1" in printed
    with pytest.raises(SystemExit):
        main(["dataset", "feedback", "--out", str(out), "--since", "yesterday"])
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main(["dataset", "feedback", "--out", str(out), "--eval-out", str(heldout), "--eval-fraction", "1.5"]) == 2

"""The follow-up heuristic (no LLM): the previous question's subject replaces references, takes X's place in an
ellipsis, names a successor, or is prefixed; standalone questions are left alone. Hand-made conversations."""

from __future__ import annotations

import pytest

from rag.conversation import continues_conversation, looks_like_followup, resolve_followup
from rag.ordinals import answer_item
from rag.question_subject import question_subject
from rag.successors import versioned_names
from rag.text import Tokenizer
from rag.types import Turn


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def conversation(*turns: str) -> list[Turn]:
    """Alternating user / assistant turns, the user first."""
    return [Turn("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(turns)]


def assert_resolved(previous: str, followup: str, resolved: str, tokenizer: Tokenizer) -> None:
    """`followup`, asked after `previous`, is a follow-up and resolves to `resolved`."""
    assert looks_like_followup(followup, tokenizer)
    assert resolve_followup(followup, conversation(previous, "……"), tokenizer) == resolved


LORA = conversation("LoRA 是什么？", "LoRA 是一种低秩适配方法。[1]")


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("LoRA 是什么？", "那它有什么缺点？", "LoRA 有什么缺点？"),
        ("梯度消失是怎么产生的？", "其原因是什么？", "梯度消失原因是什么？"),
        ("数据增强是怎么做的？", "这么做有什么风险？", "数据增强有什么风险？"),
        ("数据增强是怎么做的？", "这样做会过拟合吗？", "数据增强会过拟合吗？"),
        ("BERT 和 GPT 的区别是什么？", "它们各自适合什么任务？", "BERT 和 GPT 各自适合什么任务？"),
        # 它 in the clause of another name stands for the previous subject, not for that name
        ("交叉熵损失是什么？", "为什么分类任务常用它？", "为什么分类任务常用交叉熵损失？"),
        # 在里面 / 在其中 / 在这当中 point inside the previous subject
        ("什么是知识蒸馏？", "温度参数在里面起什么作用？", "温度参数在知识蒸馏中起什么作用？"),
        ("什么是 RLHF？", "奖励模型在这当中负责什么？", "奖励模型在 RLHF中负责什么？"),
        ("Transformer 是什么？", "位置编码在其中有什么用？", "位置编码在 Transformer中有什么用？"),
        ("CAP 理论说的是什么？", "其中的分区容错性指什么？", "CAP 理论中的分区容错性指什么？"),  # 其中 opening it
        ("LLaMA 的训练数据有哪些？", "里面有中文吗？", "LLaMA 的训练数据中有中文吗？"),  # 里面 opening it
        ("BERT 的输入由哪几部分组成？", "这里面哪部分区分两个句子？", "BERT 的输入中哪部分区分两个句子？"),
        # a demonstrative with the noun the subject ends with stands for the subject whole
        ("什么是未登录词？", "一般怎么处理这种词？", "一般怎么处理未登录词？"),
        ("什么是梯度裁剪方法？", "这种方法有什么缺点？", "梯度裁剪方法有什么缺点？"),
        ("DeepFM 是什么模型？", "这个模型有什么缺点？", "DeepFM 模型有什么缺点？"),
    ],
)
def test_chinese_reference_is_replaced_by_the_subject(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert_resolved(previous, followup, resolved, tokenizer)


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("What is a GRU?", "Is it faster than an LSTM?", "Is GRU faster than an LSTM?"),
        ("What is the attention mechanism?", "Does it have any drawbacks?", "Does attention mechanism have any drawbacks?"),
        ("What is LoRA?", "What about its disadvantages?", "What about LoRA's disadvantages?"),
        ("What are the advantages of dropout?", "When should I avoid it?", "When should I avoid dropout?"),
        # "it" before "hard to <verb>" with nothing after the verb is the subject; with an object it is a dummy
        ("What is a GAN?", "Why is it hard to train?", "Why is GAN hard to train?"),
        ("What is a GAN?", "Is it hard to train a VAE?", "Is it hard to train a VAE?"),
        # the subject of the asked verb, whatever names the asked phrase holds; not "it" of a second clause
        ("What is RLHF?", "Which RL algorithm does it use?", "Which RL algorithm does RLHF use?"),
        ("What is dropout?", "Which layers is it applied to?", "Which layers is dropout applied to?"),
        ("What is BERT?", "What is GPT and how does it differ?", "What is GPT and how does it differ?"),
    ],
)
def test_english_pronoun_is_replaced_by_the_subject(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert resolve_followup(followup, conversation(previous, "..."), tokenizer) == resolved


def test_the_subject_is_carried_not_every_key_term(tokenizer: Tokenizer) -> None:
    history = conversation("LoRA 微调里最重要的超参数是什么？", "秩 r。")
    assert resolve_followup("那它有什么缺点？", history, tokenizer) == "LoRA 微调有什么缺点？"
    assert resolve_followup("它和全量微调比呢？", history, tokenizer) == "LoRA 微调和全量微调比呢？"


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("怎么创建虚拟环境？", "它有什么好处？", "虚拟环境有什么好处？"),
        ("如何缓解过拟合？", "它是怎么产生的？", "过拟合是怎么产生的？"),
        ("怎么用 LoRA 微调？", "它有什么缺点？", "LoRA 微调有什么缺点？"),
    ],
)
def test_a_how_to_question_is_about_what_its_verb_is_done_to(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert resolve_followup(followup, conversation(previous, "..."), tokenizer) == resolved


def test_the_answer_names_the_subject_when_the_question_asked_for_one(tokenizer: Tokenizer) -> None:
    history = conversation("哪个模型最早提出了自注意力？", "Transformer，2017 年的论文提出。[1]")
    assert resolve_followup("它有什么缺点？", history, tokenizer) == "Transformer 有什么缺点？"
    # asked which thing to use: the name the answer gives it
    history = conversation("东京坐地铁用什么卡？", "在东京建议购买 Suica 卡，可以坐地铁和 JR。[1]")
    assert resolve_followup("它还能干什么？", history, tokenizer) == "Suica 卡还能干什么？"
    history = conversation("BERT 用什么激活函数？", "BERT 使用 GELU 激活函数。[1]")
    assert resolve_followup("它有什么优点？", history, tokenizer) == "GELU 激活函数有什么优点？"
    # asked what kind of thing its subject is: the subject stays
    history = conversation("ChatGLM-6B 是个什么模型？", "ChatGLM-6B 是一个开源的对话语言模型。[1]")
    assert resolve_followup("它英文回答靠谱吗？", history, tokenizer).startswith("ChatGLM-6B")
    # the answer names nothing of that kind: the question's own subject
    history = conversation("LoRA 微调用什么学习率？", "一般比全量微调大一些。[1]")
    assert resolve_followup("它有什么缺点？", history, tokenizer).startswith("LoRA")


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("梯度消失是怎么产生的？", "那梯度爆炸呢？", "梯度爆炸是怎么产生的？"),
        ("卷积网络里的池化层是做什么的？", "那全连接层呢？", "卷积网络里的全连接层是做什么的？"),
        ("GPT 预训练是怎么做的？", "那微调呢？", "GPT 微调是怎么做的？"),  # X replaces the part of its own script
        ("BERT 的 MLM 任务是什么？", "那 RTD 呢？", "BERT 的 RTD 任务是什么？"),
        ("LoRA 的原理是什么？", "那 QLoRA 呢？", "QLoRA 的原理是什么？"),  # the generic ask is not the subject
        ("GPT 的预训练目标是什么？", "那 BERT 呢？", "BERT 的预训练目标是什么？"),  # a name replaces the name
        ("DCN 网络的 Cross 层是怎么工作的？", "那 Deep 部分呢？", "DCN 网络的 Deep 部分是怎么工作的？"),  # mixed X: all of it
        # a part or version of a subject that names one thing asks about that thing's part
        ("什么是 SimCSE？", "无监督版本呢？", "什么是 SimCSE 的无监督版本？"),
        ("Transformer 的编码器是什么结构？", "那解码器部分呢？", "Transformer 的解码器部分是什么结构？"),
        ("What is a GRU?", "What about LSTM?", "What is a LSTM?"),
        ("什么是 Few-shot？", "One-shot 呢？", "什么是 One-shot？"),  # "One" of a hyphenated name refers to nothing
        # a sibling of another word of the question (the other kind of sample) takes its place; the subject stays
        ("SimCSE 怎么构造正样本？", "负样本呢？", "SimCSE 怎么构造负样本？"),
        ("NSP 任务的正样本怎么选？", "负样本呢？", "NSP 任务的负样本怎么选？"),
        ("LSTM 的输入门有什么作用？", "遗忘门呢？", "LSTM 的遗忘门有什么作用？"),  # whatever jieba glues to 门
        ("什么是均匀量化？", "非均匀量化呢？", "什么是非均匀量化？"),  # a kind of the subject: not a sibling of 是均匀量化
        # X's own: the same asked of another owner, or another thing asked of X, not the last predicate again
        ("GPT 的预训练目标是什么？", "BERT 的呢？", "BERT 的预训练目标是什么？"),
        ("Adam 的学习率一般设多少？", "SGD 的学习率呢？", "SGD 的学习率一般设多少？"),
        ("LSTM 有哪几个门？", "遗忘门的作用呢？", "遗忘门的作用是什么？"),
        ("LoRA 的优点是什么？", "QLoRA 的缺点呢？", "QLoRA 的缺点是什么？"),
        ("Sentence-BERT 训练阶段是怎么做的？", "那推理的时候呢？", "Sentence-BERT 推理的时候是怎么做的？"),  # a time, not X's
    ],
)
def test_ellipsis_asks_the_previous_question_about_x(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert_resolved(previous, followup, resolved, tokenizer)


@pytest.mark.parametrize(
    ("first", "second", "followup", "resolved"),
    [
        ("什么是 LSTM？", "GRU 呢？", "它们有什么区别？", "LSTM 和 GRU 有什么区别？"),
        ("什么是 BERT？", "GPT 呢？", "两者的区别是什么？", "BERT 和 GPT 两者的区别是什么？"),
        ("什么是 Few-shot？", "One-shot 呢？", "两者有什么区别？", "Few-shot 和 One-shot 两者有什么区别？"),
        # a kind of the first named by a word before it is another thing (not a part of it, as "LSTM 的门" is)
        ("什么是 LoRA？", "QLoRA 呢？", "它们有什么区别？", "LoRA 和 QLoRA 有什么区别？"),
        ("什么是梯度下降？", "随机梯度下降呢？", "它们各有什么缺点？", "梯度下降 和 随机梯度下降各有什么缺点？"),
        ("What is LayerNorm?", "What about BatchNorm?", "How do they differ?", "How do LayerNorm and BatchNorm differ?"),
        # one subject all along: 它们 are the things the answer listed, the subject stays alone
        ("什么是 LSTM？", "它有哪几个门？", "它们各自的作用是什么？", "LSTM 各自的作用是什么？"),
    ],
)
def test_a_reference_to_two_things_names_the_subjects_of_the_last_two_questions(
    first: str, second: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    history = conversation(first, "……", second, "……")
    assert resolve_followup(followup, history, tokenizer) == resolved


def test_a_reference_to_two_things_with_one_earlier_question_or_a_pathological_one_stays_bounded(
    tokenizer: Tokenizer,
) -> None:
    # one earlier subject only: the reference is resolved to it, as a singular one is
    assert resolve_followup("它们有什么区别？", conversation("什么是 LSTM？", "……"), tokenizer) == "LSTM 有什么区别？"
    # an earlier turn of 5,000 characters: its subject is cut to what the resolver parses, not copied whole
    history = conversation("x" * 5000, "……", "What is GRU?", "……")
    resolved = resolve_followup("How do they differ?", history, tokenizer)
    assert resolved.endswith("and GRU differ?") and len(resolved) < 300


def test_a_sibling_named_by_an_ellipsis_leaves_the_subject_to_the_next_reference(tokenizer: Tokenizer) -> None:
    history = conversation("SimCSE 怎么构造正样本？", "……", "负样本呢？", "……")
    assert resolve_followup("它有什么缺点？", history, tokenizer) == "SimCSE 有什么缺点？"
    # two words it could be the sibling of: none is guessed
    resolved = resolve_followup("验证集呢？", conversation("训练集上好但测试集上差怎么办？", "……"), tokenizer)
    assert resolved not in ("验证集上好但测试集上差怎么办？", "训练集上好但验证集上差怎么办？")


def test_ellipsis_of_a_generic_ask_stays_about_the_subject(tokenizer: Tokenizer) -> None:
    assert resolve_followup("那缺点呢？", LORA, tokenizer) == "LoRA 缺点呢？"


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("ResNet 是什么结构？", "它的第二版改了什么？", "ResNet ResNet-V2 ResNet V2 ResNet-2 改了什么？"),
        ("YOLO 是怎么检测目标的？", "那它的第三代呢？", "YOLO YOLO-V3 YOLO V3 YOLO-3 呢？"),
        ("What is YOLO?", "What changed in its second version?", "What changed in YOLO YOLO-V2 YOLO V2 YOLO-2?"),
        ("自编码器是怎么工作的？", "它的改进版有哪些？", "自编码器的改进版有哪些？"),  # no name to number
        ("P-Tuning 是什么？", "v2 版本改进了什么？", "P-Tuning P-Tuning-V2 P-Tuning V2 P-Tuning-2 版本改进了什么？"),  # whose v2?
        ("BERT 是什么模型？", "它后来的改进版叫什么？", "BERT 后来的改进版叫什么？"),  # 它 names it once
        # a successor the follow-up names is asked the previous question, in place of the entity (not the ask)
        ("LSTM 有哪几个门？", "它的变体 GRU 呢？", "GRU 有哪几个门？"),
        ("BERT 的预训练任务是什么？", "它的改进版 RoBERTa 呢？", "RoBERTa 的预训练任务是什么？"),
    ],
)
def test_successor_reference_names_the_subjects_version(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert_resolved(previous, followup, resolved, tokenizer)


def test_a_version_is_named_as_the_notes_write_it(tokenizer: Tokenizer) -> None:
    written = {"GPT-2", "DCN-V2"}.__contains__  # the notes write "GPT-2" and "DCN-v2"

    def resolved(previous: str, followup: str) -> str:
        return resolve_followup(followup, conversation(previous, "……"), tokenizer, known=written)

    assert resolved("什么是 GPT？", "它的第二版有什么改进？") == "GPT-2 有什么改进？"
    assert resolved("DCN 是什么？", "它的第二版改了什么？") == "DCN-V2 改了什么？"
    # opening the question, with a Chinese word after it ("第二代和" read as one word stood alone)
    assert resolved("什么是 GPT？", "第二代和第一代比有什么改进？") == "GPT-2 和第一代比有什么改进？"
    assert resolved("What is GPT?", "What changed in its second version?") == "What changed in GPT-2?"
    # a version the notes never write is asked by one name, which the reader then finds nowhere
    assert resolved("ResNet 是什么结构？", "它的第二版改了什么？") == "ResNet-V2 改了什么？"
    assert versioned_names("GPT", 3) == ["GPT-3", "GPT-V3"]


def test_a_name_with_a_middle_dot_is_one_name(tokenizer: Tokenizer) -> None:
    # "DALL·E 2 有哪些不足？" + "那 CLIP 呢？" became "DALL·CLIP 有哪些不足？"
    assert resolve_followup("那 CLIP 呢？", conversation("DALL·E 2 有哪些不足？", "……"), tokenizer) == "CLIP 有哪些不足？"


@pytest.mark.parametrize(
    "question",
    [
        "CAP 理论说的是哪三个特性？",
        "模型里面有哪些参数？",  # 里面 after a noun is inside that noun
        "QLoRA 和 LoRA 是什么关系？",
        "应该怎么设置学习率？",
        "LSTM 有哪些变体？",  # a successor word about a named subject
        "ResNet-V2 是什么？",
        "V2X 通信是什么？",  # a name that starts like a version
        "常用的损失函数有哪些？",  # 常用的 before its noun
        "What is better, LoRA or full fine-tuning?",  # the degree has its subjects
        "What is BERT and why is it popular?",  # the pronoun's antecedent is in the question
        "Is it possible to fine-tune BERT on a CPU?",  # a dummy "it"
        "为什么 BERT 要用位置编码？",  # who uses it is named
    ],
)
def test_standalone_question_is_unchanged(question: str, tokenizer: Tokenizer) -> None:
    assert not looks_like_followup(question, tokenizer)
    assert resolve_followup(question, LORA, tokenizer) == question


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("什么是梯度消失？", "怎么缓解？", "梯度消失 怎么缓解？"),
        ("什么是过拟合？", "有哪些解决办法？", "过拟合 有哪些解决办法？"),
        ("什么是 dropout？", "为什么有效？", "dropout 为什么有效？"),
        ("LSTM 有哪几个门？", "那 GRU 呢？", "GRU 有哪几个门？"),
        ("BERT 用了几层？", "那 GPT-2 呢？", "GPT-2 用了几层？"),
        ("什么是知识蒸馏？", "举个例子", "知识蒸馏 举个例子"),
        ("Adam 和 SGD 有什么区别？", "哪个更好？", "Adam 和 SGD 哪个更好？"),
        ("RLHF 有哪几个步骤？", "第二步具体做什么？", "RLHF 第二步具体做什么？"),  # an answer with no list: the ordinal stays
        ("Transformer-XL 解决了什么问题？", "是怎么解决的？", "Transformer-XL 是怎么解决的？"),  # a copula without subject
        ("What is LoRA?", "Any drawbacks?", "LoRA Any drawbacks?"),
        ("Transformer 的编码器由什么组成？", "那解码器呢？", "Transformer 的解码器由什么组成？"),
        ("ResNet 解决了什么问题？", "它的改进版呢？", "ResNet的改进版呢？"),  # no predicate marker: the leading name
        ("ResNet解决了什么问题？", "它的改进版呢？", "ResNet的改进版呢？"),  # the name ends where Chinese starts
        # ellipses that keep the subject: a comparison, and another degree of what was asked
        ("BERT 的预训练任务有哪些？", "和 GPT 比呢？", "BERT 的预训练任务和 GPT 比呢？"),
        ("学习率太大会怎样？", "太小呢？", "学习率太小会怎样？"),
        ("batch size 怎么选？", "越大越好吗？", "batch size 越大越好吗？"),  # a yes/no question naming no subject
        ("What is LoRA?", "And QLoRA?", "What is QLoRA?"),
        ("What is RLHF?", "What is the first step?", "RLHF What is the first step?"),
        ("What is gradient clipping?", "Any alternatives?", "gradient clipping Any alternatives?"),
        # a circumstance is not a subject: the question asks about the previous one then
        ("dropout 是什么？", "推理时要关掉吗？", "dropout 推理时要关掉吗？"),
        ("dropout 是什么？", "训练时怎么用？", "dropout 训练时怎么用？"),
        ("BatchNorm 是什么？", "推理的时候要开着吗？", "BatchNorm 推理的时候要开着吗？"),
        # Chinese drops a subject the conversation gives: a modal, an adverb, 越…越… or a comparison opens it
        # why it uses a thing, asked with the user left out: the conversation's subject uses it
        ("什么是 Transformer 的位置编码？", "为什么要用正弦函数？", "Transformer 的位置编码 为什么要用正弦函数？"),
        ("什么是 SimCSE？", "那为啥要用 dropout？", "SimCSE 为啥要用 dropout？"),
        # ... or why it can do something
        ("什么是残差连接？", "为什么能缓解梯度消失？", "残差连接 为什么能缓解梯度消失？"),
        ("什么是 Dropout？", "为什么可以防止过拟合？", "Dropout 为什么可以防止过拟合？"),
        ("混合精度训练是什么？", "会影响精度吗？", "混合精度训练 会影响精度吗？"),
        ("混合精度训练是什么？", "需要什么硬件？", "混合精度训练 需要什么硬件？"),
        # ... or a verb of parts: the parts are the subject's
        ("联合抽取方法是什么？", "分为哪两类？", "联合抽取方法 分为哪两类？"),
        ("什么是 Transformer？", "由什么组成？", "Transformer 由什么组成？"),
        ("什么是 RLHF？", "包含哪几个步骤？", "RLHF 包含哪几个步骤？"),
        ("CNN 的池化层有什么用？", "能不能去掉？", "CNN 的池化层 能不能去掉？"),
        ("CNN 是什么？", "能用在 NLP 上吗？", "CNN 能用在 NLP 上吗？"),
        ("什么是梯度爆炸？", "一般怎么检测？", "梯度爆炸 一般怎么检测？"),
        ("LoRA 的秩怎么选？", "越大效果越好吗？", "LoRA 越大效果越好吗？"),
        ("LSTM 是什么？", "和 GRU 有什么区别？", "LSTM 和 GRU 有什么区别？"),
        ("What is RLHF?", "Why is PPO used there?", "RLHF Why is PPO used there?"),
        # a remedy whose object is left out, a verb and a degree, a request, an ordinal after a request
        ("梯度消失怎么解决？", "ReLU 为什么能缓解？", "梯度消失 ReLU 为什么能缓解？"),
        ("什么是梯度爆炸？", "梯度裁剪能解决吗？", "梯度爆炸 梯度裁剪能解决吗？"),
        ("知识蒸馏的温度是什么？", "设太高会怎样？", "知识蒸馏的温度 设太高会怎样？"),
        ("What is Adam?", "Can you give an example?", "Adam Can you give an example?"),
        ("RLHF 有哪几个步骤？", "详细说说第二点", "RLHF 详细说说第二点"),
        # a continuation naming its own subject is still a follow-up when it also points back
        ("Transformer 的位置编码是什么？", "那 RoPE 把它改成了什么形式？", "RoPE 把 Transformer 的位置编码改成了什么形式？"),
        ("交叉验证是什么？", "常用的有哪几种？", "交叉验证 常用的有哪几种？"),  # an adjective with no noun after 的
        ("什么是注意力机制？", "多头的有什么好处？", "注意力机制 多头的有什么好处？"),  # any modifier with none
        ("What is perplexity?", "Is lower better?", "perplexity Is lower better?"),  # degrees of what?
        ("What is the CAP theorem?", "Which one is usually given up?", "CAP theorem Which one is usually given up?"),
        # a degree (更好, 最快) is what is asked, not a subject
        ("P-Tuning 和 Prefix Tuning 有什么区别？", "哪个效果更好？", "P-Tuning 和 Prefix Tuning 哪个效果更好？"),
        # a circumstance after a question that had none: the same question, at that time
        ("ChatGLM-6B 需要多少显存？", "量化以后呢？", "ChatGLM-6B 量化以后需要多少显存？"),
        # ... but a phase the previous question named is what the circumstance replaces
        ("Sentence-BERT 训练阶段是怎么做的？", "那推理的时候呢？", "Sentence-BERT 推理的时候是怎么做的？"),
        # in English too: a time or a setting is no X to put in the subject's place ("What is at inference time?")
        ("What is dropout?", "And at inference time?", "What is dropout at inference time?"),
        ("How much memory does ChatGLM-6B need?", "What about with INT4 quantization?",
         "How much memory does ChatGLM-6B need with INT4 quantization?"),
        # an English question without a verb asks a figure or a kind of the subject: it stood alone
        ("What is GPT-3?", "How many parameters?", "GPT-3 How many parameters?"),
        ("What is BERT?", "Which optimizer?", "BERT Which optimizer?"),
        # an attribute after "and" is the subject's, not a thing in its place ("What is the formula?")
        ("What is attention?", "And the formula?", "attention And the formula?"),
    ],
)
def test_a_followup_that_names_no_subject_asks_about_the_previous_one(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert_resolved(previous, followup, resolved, tokenizer)


def test_a_short_question_with_its_own_subject_stands_alone(tokenizer: Tokenizer) -> None:
    for question in (
        "怎么防止过拟合？", "如何理解注意力机制？", "为什么 Transformer 需要位置编码？", "Adam 收敛快吗？",
        "How many parameters does GPT-3 have?", "What is gradient clipping?",
    ):
        assert not looks_like_followup(question, tokenizer), question
        assert resolve_followup(question, conversation("什么是梯度消失？", "……"), tokenizer) == question


@pytest.mark.parametrize(
    ("previous", "question"),
    [
        ("What is GPT?", "And what is BERT?"),
        ("What is GPT?", "Also, how is BERT trained?"),
        ("GPT 是什么？", "那 BERT 是什么？"),
        ("GPT 是什么？", "还有，BERT 是怎么预训练的？"),
    ],
)
def test_a_continuation_that_names_its_own_subject_stands_alone(
    previous: str, question: str, tokenizer: Tokenizer
) -> None:
    """'And'/'那'/'还有' before a question with its own subject does not make it about the previous subject."""
    assert not looks_like_followup(question, tokenizer)
    assert resolve_followup(question, conversation(previous, "……"), tokenizer) == question


def test_a_time_word_that_is_not_a_circumstance_leaves_the_question_alone(tokenizer: Tokenizer) -> None:
    """实时 and 时间 are words, not "while …" clauses; a circumstance followed by its own subject stands alone."""
    for question in ("实时系统有哪些？", "训练时间太长怎么办？", "推理时为什么要用 KV cache？", "训练时显存不够怎么办？"):
        assert not looks_like_followup(question, tokenizer), question


def test_a_question_that_only_looks_subjectless_stands_alone(tokenizer: Tokenizer) -> None:
    """能量 and 会计 are words, not the modals 能 and 会; "应该怎么……" asks how to do what it names; a long question
    names its own topic."""
    for question in (
        "能量函数是什么？", "会计准则和机器学习有关系吗？", "应该怎么设置学习率？", "需要多少显存才能训练 7B 模型？",
        "学习率太高会怎样？", "怎样防止过拟合？",
    ):
        assert not looks_like_followup(question, tokenizer), question
        assert resolve_followup(question, conversation("什么是梯度消失？", "……"), tokenizer) == question


def test_followup_without_a_previous_question_is_unchanged(tokenizer: Tokenizer) -> None:
    assert resolve_followup("那它有什么缺点？", [], tokenizer) == "那它有什么缺点？"
    assistant_only = [Turn("assistant", "LoRA 是一种低秩适配方法。")]
    assert resolve_followup("那它有什么缺点？", assistant_only, tokenizer) == "那它有什么缺点？"


def test_followup_chain_keeps_the_subject_that_started_it(tokenizer: Tokenizer) -> None:
    english = conversation("What is catastrophic forgetting?", "…", "Why does it happen?", "…")
    assert resolve_followup("And how to avoid it?", english, tokenizer) == "And how to avoid catastrophic forgetting?"
    chinese = conversation("Transformer 是什么？", "…", "那它的缺点呢？", "…")
    assert resolve_followup("它有什么改进？", chinese, tokenizer) == "Transformer 有什么改进？"
    # an ellipsis after a follow-up asks the resolved follow-up about X, and X becomes the subject
    assert resolve_followup("那 BERT 呢？", chinese, tokenizer) == "BERT 的缺点呢？"
    longer = [*chinese, *conversation("那 BERT 呢？", "…")]
    assert resolve_followup("它有什么改进？", longer, tokenizer) == "BERT 有什么改进？"


@pytest.mark.parametrize(
    ("question", "subject"),
    [
        ("卷积神经网络的池化层有什么作用？", "卷积神经网络的池化层"),
        ("低比特量化是什么？", "低比特量化"),  # 比 inside a word does not end the subject
        ("请问集中式存储中的数据是怎么同步的？", "集中式存储中的数据"),
        ("QLoRA 和 LoRA 的区别是什么？", "QLoRA 和 LoRA"),
        ("What are the advantages of LoRA?", "LoRA"),
        ("Explain the transformer architecture", "transformer architecture"),
        ("How is the reward model trained?", "reward model"),  # a passive's subject, before its participle
        ("How is BERT pre-trained?", "BERT"),
        ("什么是过拟合？", "过拟合"),  # "什么是 X": all of X, not the words jieba leaves of it
        ("什么是 LoRA 的原理？", "LoRA"),
        ("LSTM 有哪几个门？", "LSTM"),  # 有 opens the predicate; 哪几个 names nothing
    ],
)
def test_question_subject(question: str, subject: str, tokenizer: Tokenizer) -> None:
    assert question_subject(question, tokenizer) == subject


def test_an_ordinal_is_replaced_by_that_item_of_the_previous_answers_list(tokenizer: Tokenizer) -> None:
    steps = conversation(
        "RLHF 分为哪三个步骤？",
        "RLHF 按三个步骤分解：[1]\n1. 预训练一个语言模型 (LM) ；[1]\n2. 聚合问答数据并训练一个奖励模型；[1]\n3. 用强化学习方式微调 LM。[1]",
    )
    assert resolve_followup("第二步具体做什么？", steps, tokenizer) == "RLHF 聚合问答数据并训练一个奖励模型具体做什么？"
    assert resolve_followup("详细说说第三步", steps, tokenizer) == "详细说说 RLHF 用强化学习方式微调 LM"
    assert resolve_followup("What happens in the first step?", steps, tokenizer) == "What happens in RLHF 预训练一个语言模型 (LM)?"
    # an item the list does not have: the ordinal stays, with the subject
    assert resolve_followup("第五步呢？", steps, tokenizer) == "RLHF 第五步呢？"


def test_an_ordinal_counts_in_a_list_written_inline_or_in_the_answer_before(tokenizer: Tokenizer) -> None:
    kinds = conversation(
        "联合抽取方法分为哪两类？", "Joint Method主要分为两个流派，基于参数共享和基于标注策略两类。[1]"
    )
    assert resolve_followup("第二类是怎么做的？", kinds, tokenizer) == "联合抽取方法基于标注策略是怎么做的？"
    assert answer_item("按量化过程中是否需要进行训练可分为两类PTQ和QAT。[1]", 2) == "QAT"
    assert answer_item("深度学习框架通常包括：自动微分、优化器、可视化。", 3) == "可视化"
    assert answer_item("模型越大，效果越好。", 1) is None  # no list
    # the answer just given is about the first kind; the list is in the one before
    later = [*conversation("量化分为哪两类？", "按量化过程中是否需要进行训练可分为两类PTQ和QAT。[1]"),
             *conversation("第一类是什么？", "PTQ, 顾名思义，就是在模型训练后做的量化。[1]")]
    assert resolve_followup("第二种呢？", later, tokenizer) == "量化 QAT 呢？"
    assert resolve_followup("那第二种呢？", later, tokenizer) == "量化 QAT 呢？"  # read as without its 那
    # a count is no subject: "有哪两个门？" asks about the conversation's
    assert resolve_followup("有哪两个门？", conversation("什么是 GRU？", "GRU是LSTM结构的变式。[1]"), tokenizer) == "GRU 有哪两个门？"


DISTILLATION = conversation(
    "什么是知识蒸馏？", "用于知识蒸馏的softmax公式，和常见的softmax公式比，多了一个参数T，称为温度；[1]"
)


@pytest.mark.parametrize(
    ("followup", "resolved"),
    [
        ("温度有什么作用？", "知识蒸馏温度有什么作用？"),  # a subject before its predicate
        ("温度一般设多少？", "知识蒸馏温度一般设多少？"),  # one word naming something, no subject span
    ],
)
def test_a_common_term_the_last_answer_used_is_asked_about_there(
    followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert not looks_like_followup(followup, tokenizer)  # it names a subject of its own ...
    assert continues_conversation(followup, DISTILLATION, tokenizer)  # ... one the last answer used
    assert resolve_followup(followup, DISTILLATION, tokenizer) == resolved


@pytest.mark.parametrize(
    "question",
    [
        "什么是温度？",  # what the term is: a definition stands alone
        "Softmax 有什么作用？",  # a Latin name names something of its own
        "学习率有什么作用？",  # a term the last answer did not use
    ],
)
def test_a_question_the_last_answer_does_not_explain_stands_alone(question: str, tokenizer: Tokenizer) -> None:
    history = conversation(DISTILLATION[0].content, DISTILLATION[1].content + " Softmax 的输出随温度变平滑。[1]")
    assert not continues_conversation(question, history, tokenizer)
    assert resolve_followup(question, history, tokenizer) == question


def test_two_terms_of_the_last_answer_joined_by_and_are_asked_about_there(tokenizer: Tokenizer) -> None:
    gan = conversation("什么是 GAN？", "生成对抗网络(GAN)生成模型、模拟样本需要训练判别器与生成器模型对抗[1]")
    assert continues_conversation("生成器和判别器分别做什么？", gan, tokenizer)
    assert resolve_followup("生成器和判别器分别做什么？", gan, tokenizer) == "GAN 生成器和判别器分别做什么？"
    # one of the two the answer never used, or the two not joined: the question stands alone
    for question in ("生成器和编码器分别做什么？", "生成器做了什么，判别器呢？"):
        assert resolve_followup(question, gan, tokenizer) == question, question
    # a pathological question (2,000 characters of terms joined by 和) is read for its first words only: it resolves,
    # and stands alone when those words are not the answer's
    long = "和".join(f"词项{i}" for i in range(300)) + "和生成器和判别器分别做什么？"
    assert resolve_followup(long, gan, tokenizer) == long


def test_without_a_history_nothing_continues(tokenizer: Tokenizer) -> None:
    assert not continues_conversation("温度有什么作用？", [], tokenizer)
    # no earlier question, an empty one, or one with no answer yet: no answer used the term
    for history in ([Turn("assistant", "……称为温度；")], [Turn("user", ""), Turn("assistant", "……称为温度；")],
                    [Turn("user", "什么是知识蒸馏？")]):
        assert not continues_conversation("温度有什么作用？", history, tokenizer)
        assert resolve_followup("温度有什么作用？", history, tokenizer) == "温度有什么作用？"


@pytest.mark.parametrize(
    ("previous", "followup", "resolved"),
    [
        ("什么是 BERT？", "base 版本有多少参数？", "BERT base 版本有多少参数？"),
        ("什么是 QLoRA？", "量化版本有什么好处？", "QLoRA 量化版本有什么好处？"),
        (
            "What is BERT?",
            "How many parameters does the base version have?",
            "How many parameters does the base version of BERT have?",
        ),
    ],
)
def test_a_part_or_variant_named_alone_is_the_subjects(
    previous: str, followup: str, resolved: str, tokenizer: Tokenizer
) -> None:
    assert_resolved(previous, followup, resolved, tokenizer)


@pytest.mark.parametrize(
    "question",
    [
        "BERT 的 base 版本有多少参数？",  # it names whose version
        "大模型的量化版本有哪些？",
        "How many parameters does the base version of RoBERTa have?",
    ],
)
def test_a_part_or_variant_of_a_named_thing_stands_alone(question: str, tokenizer: Tokenizer) -> None:
    assert not looks_like_followup(question, tokenizer)

"""Config values are checked against their fields' annotations, strictly, wherever they come from
(YAML, JSON, a mapping, code), with an error naming the field and the value."""

import dataclasses
import typing

import numpy as np
import pytest

from armor import config as config_module
from armor.config import (
    ArmorGraphConfig,
    EncodeConfig,
    FusionConfig,
    SplitConfig,
    TrainConfig,
    from_dict,
    from_yaml,
    merge,
    setting,
)
from armor.errors import ConfigError
from armor.fields import choices, field_hints
from armor.models.neighbors import EASEConfig


@pytest.mark.parametrize("cls, values, message", [
    (TrainConfig, {"epochs": 2.5}, r"train\.epochs: expected an integer, got 2\.5 \(float\)"),
    (TrainConfig, {"epochs": "10"}, r"train\.epochs: expected an integer, got '10' \(str\)"),
    (TrainConfig, {"epochs": True}, r"train\.epochs: expected an integer, got True \(bool\)"),
    (TrainConfig, {"lr": "1e-3"}, r"train\.lr: expected a number, got '1e-3' \(str\)"),
    (ArmorGraphConfig, {"content": "no"}, r"armor_graph\.content: expected true or false, got 'no' \(str\)"),
    (ArmorGraphConfig, {"content": 0}, r"armor_graph\.content: expected true or false, got 0 \(int\)"),
    (SplitConfig, {"method": "leave-one-out"}, r"split\.method: must be one of random, temporal, loo, cold, "
                                               r"got 'leave-one-out'"),
    (SplitConfig, {"ratios": [0.8, 0.2]}, r"split\.ratios: expected 3 values, got 2"),
    (SplitConfig, {"ratios": [0.8, "0.1", 0.1]}, r"split\.ratios\[1\]: expected a number, got '0\.1'"),
    (EncodeConfig, {"modalities": ["text", "audio"]}, r"encode\.modalities\[1\]: must be one of text, poster, "
                                                      r"thumbnail, got 'audio'"),
    (TrainConfig, {"steps_per_epoch": "many"}, r"train\.steps_per_epoch: expected an integer or unset \(null\), "
                                               r"got 'many'"),
    (EASEConfig, {"l2": [1, 2]}, r"ease\.l2: expected a number, got \[1, 2\]"),
])
def test_a_value_of_the_wrong_type_names_the_field_and_the_value(cls, values, message):
    section = {TrainConfig: "train", ArmorGraphConfig: "armor_graph", SplitConfig: "split", EncodeConfig: "encode",
               EASEConfig: "ease"}[cls]
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, values, where=section)


def test_values_are_stored_as_their_annotation_says():
    train = from_dict(TrainConfig, {"lr": 1, "epochs": np.int64(7), "margin": np.float32(0.25),
                                    "steps_per_epoch": None})
    assert (type(train.lr), type(train.epochs), type(train.margin)) == (float, int, float)
    assert (train.lr, train.epochs, train.steps_per_epoch) == (1.0, 7, None)
    split = from_dict(SplitConfig, {"ratios": [0.7, 0.2, 0.1]})
    assert split.ratios == (0.7, 0.2, 0.1) and isinstance(split.ratios, tuple)
    assert from_dict(ArmorGraphConfig, {"content": np.bool_(False), "id_embeddings": True}).content is False


def test_yaml_exponents_are_numbers_and_errors_name_the_file(tmp_path):
    path = tmp_path / "armor.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-6\n  temperature: 1.0e-1\n  epochs: 10\n")
    train = from_yaml(TrainConfig, path, "train")
    assert (train.lr, train.weight_decay, train.temperature, train.epochs) == (1e-3, 5e-6, 0.1, 10)
    path.write_text("train:\n  epochs: 2.5\n")
    with pytest.raises(ConfigError, match=rf"{path}:train\.epochs: expected an integer, got 2\.5"):
        from_yaml(TrainConfig, path, "train")
    path.write_text("train:\n  lr: '1e-3'\n")  # quoted: a string, and strings are not numbers
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number, got '1e-3'"):
        from_yaml(TrainConfig, path, "train")


def test_code_gets_the_same_checks_as_files():
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got 2\.5"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ConfigError, match=r"fusion\.modalities\[0\]: must be one of text, poster, thumbnail"):
        FusionConfig(modalities=("audio",))
    with pytest.raises(ConfigError, match=r"train\.mining: must be one of random, semi-hard, batch-hard"):
        merge(TrainConfig(), mining="hardest")
    assert type(TrainConfig(lr=1).lr) is float


@pytest.mark.parametrize("field, value, message", [
    ("lr", -1.0, r"armor_graph\.lr: must be > 0, got -1\.0"),
    ("fusion_dim", 0, r"armor_graph\.fusion_dim: must be >= 1, got 0"),
    ("align_temperature", 0.0, r"armor_graph\.align_temperature: must be > 0, got 0\.0"),
    ("heads", 3, r"armor_graph\.heads: must be >= 1 and divide fusion_dim=64, got 3"),
    ("fusion_dropout", 1.0, r"armor_graph\.fusion_dropout: must be in \[0, 1\), got 1\.0"),
])
def test_each_armor_graph_check_names_its_own_field_and_rule(field, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        ArmorGraphConfig(**{field: value})
    assert "content side" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"armor_graph\.id_embeddings: without ID embeddings the content side "
                                          r"must be on \(content=true\), got False"):
        ArmorGraphConfig(id_embeddings=False, content=False)


def test_a_field_that_is_none_until_set_and_a_missing_required_one():
    @dataclasses.dataclass(frozen=True)
    class Job:
        workspace: str = setting(None, "set by the caller")
        name: str = setting("x", "a name")

    @dataclasses.dataclass(frozen=True)
    class Needs:
        count: int

    assert from_dict(Job, {"workspace": None}).workspace is None
    with pytest.raises(ConfigError, match=r"job\.name: expected a string, got 3"):
        from_dict(Job, {"name": 3}, where="job")
    with pytest.raises(ConfigError, match=r"needs\.count: required setting is missing"):
        from_dict(Needs, {}, where="needs")


def literal_fields():
    for cls in vars(config_module).values():
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == config_module.__name__:
            for field in dataclasses.fields(cls):
                if choices(field_hints(cls)[field.name]):
                    yield cls, field


def test_literal_choices_are_declared_once_for_the_checks_and_the_cli():
    from pipelines.cli import _argument

    fields = list(literal_fields())
    assert len(fields) >= 14
    for cls, field in fields:
        hint = field_hints(cls)[field.name]
        allowed = choices(hint)
        assert _argument(hint, field.default)["choices"] == list(allowed), (cls.__name__, field.name)
        bad = ("not-a-choice",) if typing.get_origin(hint) is tuple else "not-a-choice"
        with pytest.raises(ConfigError, match=", ".join(allowed)):
            cls(**{field.name: bad})

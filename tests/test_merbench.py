"""The MERBench plug-in against a MERBench-shaped tree that these tests write.

The tree has upstream MERBench's file names and, in the files the installer edits, upstream's
structures (zeroQiaoba/MERTools, folder MERBench): the relative imports and the `MODEL_MAP` dict
literal inside `get_models.__init__` (8-space indent, comment lines, a blank line before the closing
brace), `MODEL_DATASET_MAP` in `get_datasets.__init__` (no final newline), model-tune.yaml's per-model
sections of value lists, and main-release.py's argparse block under `if __name__ == '__main__':`
followed by the yaml draw and `merge_args_config`. The rest of the code in it is written for these
tests (small, CPU), not copied from MERBench.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from armer.config import V2_ONLY, ModelConfig
from armer.constants import MER2023_LABELS
from armer.merbench import installer
from armer.merbench.adapter import AttentionRobust, AttentionRobustV2, config_from_args
from armer.merbench.installer import MERBenchError, NotMERBenchError, install, strip_blocks, uninstall

REPO = Path(__file__).resolve().parents[1]
DIMS = {"audio": 16, "text": 24, "video": 12}
FEATURES = {"audio": "chinese-hubert-large-UTT", "text": "Baichuan-13B-Base-UTT", "video": "clip-vit-large-patch14-UTT"}
ALL_EDITED = ["main-release.py", "toolkit/data/__init__.py", "toolkit/model-tune.yaml", "toolkit/models/__init__.py",
              "toolkit/models/attention_robust.py", "toolkit/models/attention_robust_v2.py"]

# --------------------------------------------------------------------------- the MERBench tree

MODELS_INIT = '''\
"""
get_models: get models and load default configs;
link: https://github.com/thuiar/MMSA-FET/tree/master
"""
import torch

from .tfn import TFN
from .lmf import LMF
from .mfn import MFN
from .mfm import MFM
from .mult import MULT
from .misa import MISA
from .mctn import MCTN
from .mmim import MMIM
from .graph_mfn import Graph_MFN
from .attention import Attention

class get_models(torch.nn.Module):
    def __init__(self, args):
        super(get_models, self).__init__()
        # misa/mmim can explode under some settings; tfn needs much memory

        MODEL_MAP = {
            
            # utterance-level fusion: utt / align / unalign
            'attention': Attention,
            'lmf': LMF,
            'misa': MISA,
            'mmim': MMIM,
            'tfn': TFN,
            
            # align only
            'mfn': MFN, # slow
            'graph_mfn': Graph_MFN, # slow
            'mfm': MFM, # slow
            'mctn': MCTN, # slow

            # align / unalign
            'mult': MULT, # slow

        }
        self.model = MODEL_MAP[args.model](args)

    def forward(self, batch):
        return self.model(batch)
'''

DATA_INIT = '''\
from torch.utils.data import Dataset

from .feat_data import Data_Feat

# (names, labels, data_type) -> features and labels
class get_datasets(Dataset):

    def __init__(self, args, names, labels):

        MODEL_DATASET_MAP = {
            
            # features
            'attention': Data_Feat,
            'lf_dnn': Data_Feat,
            'lmf': Data_Feat,
            'misa': Data_Feat,
            'mmim': Data_Feat,
            'tfn': Data_Feat,
            'mfn': Data_Feat,
            'graph_mfn': Data_Feat,
            'ef_lstm': Data_Feat, 
            'mfm': Data_Feat,
            'mctn': Data_Feat,
            'mult': Data_Feat,

        }

        self.dataset_class = MODEL_DATASET_MAP[args.model]
        self.dataset = self.dataset_class(args, names, labels)

    def __len__(self):
        return self.dataset.__len__()

    def __getitem__(self, index):
        return self.dataset.__getitem__(index)

    def collater(self, instances):
        return self.dataset.collater(instances)
         
    def get_featdim(self):
        return self.dataset.get_featdim()'''  # upstream ends without a final newline

FEAT_DATA = '''\
import os
import torch
import numpy as np
from torch.utils.data import Dataset
import config

class Data_Feat(Dataset):
    def __init__(self, args, names, labels):
        self.names, self.labels = names, labels
        root = config.PATH_TO_FEATURES[args.dataset]
        self.feats = [[np.load(os.path.join(root, feature, name + '.npy')) for name in names]  # utt: (D,)
                      for feature in [args.audio_feature, args.text_feature, args.video_feature]]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        return [f[index] for f in self.feats], self.labels[index], self.names[index]

    def collater(self, instances):
        stack = lambda m: torch.FloatTensor(np.array([feats[m] for feats, _, _ in instances]))
        emos = torch.LongTensor([label['emo'] for _, label, _ in instances])
        vals = torch.FloatTensor([label['val'] for _, label, _ in instances])
        return dict(audios=stack(0), texts=stack(1), videos=stack(2)), emos, vals, [n for _, _, n in instances]

    def get_featdim(self):
        return tuple(len(f[0]) for f in self.feats)
'''

ATTENTION = '''\
import torch
import torch.nn as nn

class Attention(nn.Module):  # upstream fuses MLP encoders with attention; here the smallest model of its interface
    def __init__(self, args):
        super(Attention, self).__init__()
        self.grad_clip = args.grad_clip
        self.encoder = nn.Linear(args.audio_dim + args.text_dim + args.video_dim, args.hidden_dim)
        self.fc_out_1 = nn.Linear(args.hidden_dim, args.output_dim1)
        self.fc_out_2 = nn.Linear(args.hidden_dim, args.output_dim2)

    def forward(self, batch):
        features = torch.relu(self.encoder(torch.cat([batch['audios'], batch['texts'], batch['videos']], dim=-1)))
        return features, self.fc_out_1(features), self.fc_out_2(features), torch.tensor(0.0)
'''

TUNE_YAML = """\
tfn:
  hidden_dim: [64, 128]
  dropout: [0.2, 0.3, 0.4, 0.5]
  grad_clip: [-1.0]
  lr: [1e-3, 1e-4]

attention:
  hidden_dim: [64, 128, 256]
  dropout: [0.2, 0.3, 0.4, 0.5]
  grad_clip: [-1.0]
  lr: [0.001]
"""

FUNCTIONS = '''\
import random
import argparse

# config -> args: only keys that args lacks or holds as None
def merge_args_config(args, config):
    args_dic = vars(args)
    for key in config:
        if key not in args_dic or args_dic[key] is None:
            args_dic[key] = config[key]
    return argparse.Namespace(**args_dic)

# draw one value per hyper-parameter list of model-tune.yaml
def func_random_select(config):
    for key in config:
        config[key] = config[key][random.randint(0, len(config[key]) - 1)]
    return config
'''

DATALOADER = """\
import numpy as np
from torch.utils.data import DataLoader
from torch.utils.data.sampler import SubsetRandomSampler

import config
from toolkit.data import get_datasets

# MER2023 (upstream: mer2023.py behind a DATALOADER_MAP): train split into 2 folds, test1 the test set
class get_dataloaders:
    def __init__(self, args):
        self.args = args
        args.output_dim1, args.output_dim2 = 6, 1

    def read(self, split):
        corpus = np.load(config.PATH_TO_LABEL[self.args.dataset], allow_pickle=True)[split + '_corpus'].tolist()
        names = sorted(corpus)
        emos = ['neutral', 'angry', 'happy', 'sad', 'worried', 'surprise']
        return get_datasets(self.args, names, [{'emo': emos.index(corpus[n]['emo']), 'val': corpus[n]['val']}
                                               for n in names])

    def get_loaders(self):
        train, test = self.read('train'), self.read('test1')
        loader = lambda data, **kw: DataLoader(data, batch_size=self.args.batch_size, collate_fn=data.collater, **kw)
        folds = np.array_split(np.random.permutation(len(train)), 2)
        train_loaders = [loader(train, sampler=SubsetRandomSampler(folds[1 - ii])) for ii in range(2)]
        eval_loaders = [loader(train, sampler=SubsetRandomSampler(fold)) for fold in folds]
        return train_loaders, eval_loaders, [loader(test, shuffle=False)]
"""

MAIN_RELEASE = '''\
import os
import json
import random
import argparse
import numpy as np
import yaml  # upstream: from omegaconf import OmegaConf

import torch
import torch.optim as optim

from toolkit.utils.functions import *
from toolkit.models import get_models
from toolkit.dataloader import get_dataloaders

def train_or_eval_model(args, model, reg_loss, cls_loss, dataloader, epoch, optimizer=None, train=False):
    losses = []
    model.train() if train else model.eval()
    epochs_seen = int(getattr(model.model, 'epoch', -1)) if train else None  # instrumentation for the test
    for batch, emos, vals, bnames in dataloader:  # upstream: on the GPU
        features, emos_out, vals_out, interloss = model(batch)
        loss = interloss + cls_loss(emos_out, emos) + reg_loss(vals_out, vals)
        losses.append(loss.item())
        if train:
            optimizer.zero_grad()
            loss.backward()
            if model.model.grad_clip != -1:
                torch.nn.utils.clip_grad_value_([param for param in model.parameters() if param.requires_grad], model.model.grad_clip)
            optimizer.step()
    return float(np.mean(losses)), epochs_seen

if __name__ == '__main__':
    parser = argparse.ArgumentParser()

    # Params for datasets
    parser.add_argument('--dataset', type=str, default=None, help='dataset')
    parser.add_argument('--save_root', type=str, default='./saved', help='save prediction results and models')

    # Params for feature inputs
    parser.add_argument('--audio_feature', type=str, default=None, help='audio feature name')
    parser.add_argument('--text_feature',  type=str, default=None, help='text feature name')
    parser.add_argument('--video_feature', type=str, default=None, help='video feature name')
    parser.add_argument('--feat_type',  type=str, default=None, help='feature type [utt, frm_align, frm_unalign]')

    # Params for model
    parser.add_argument('--hyper_path', type=str, default=None, help='whether choose fixed hyper-params [default use hyperparam tuning]')
    parser.add_argument('--model', type=str, default=None, help='model name for training')

    # Params for training
    parser.add_argument('--lr', type=float, default=None, metavar='lr', help='set lr rate')
    parser.add_argument('--l2', type=float, default=0.00001, metavar='L2', help='L2 regularization weight')
    parser.add_argument('--batch_size', type=int, default=32, metavar='BS', help='batch size [deal with OOM]')
    parser.add_argument('--epochs', type=int, default=100, metavar='E', help='number of epochs')
    args = parser.parse_args()
    random.seed(0); np.random.seed(0); torch.manual_seed(0)  # the test wants a reproducible run

    ## generate model_config (upstream: or the fixed values of --hyper_path)
    with open('toolkit/model-tune.yaml') as f:
        model_config = func_random_select(yaml.safe_load(f)[args.model])
    args = merge_args_config(args, model_config) # merge params

    dataloader_class = get_dataloaders(args)
    train_loaders, eval_loaders, test_loaders = dataloader_class.get_loaders()
    args.audio_dim, args.text_dim, args.video_dim = train_loaders[0].dataset.get_featdim()

    report = {'args': {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}, 'folds': []}
    for ii in range(len(train_loaders)):
        model = get_models(args)
        reg_loss, cls_loss = torch.nn.MSELoss(), torch.nn.CrossEntropyLoss()
        optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.l2)
        fold = {'model_class': type(model.model).__name__, 'train_loss': [], 'epochs_seen': []}
        for epoch in range(args.epochs):
            train_loss, seen = train_or_eval_model(args, model, reg_loss, cls_loss, train_loaders[ii], epoch, optimizer, train=True)
            for loader in [eval_loaders[ii], *test_loaders]:
                train_or_eval_model(args, model, reg_loss, cls_loss, loader, epoch)
            fold['train_loss'].append(train_loss); fold['epochs_seen'].append(seen)
        report['folds'].append(fold)
    os.makedirs(args.save_root, exist_ok=True)
    with open(os.path.join(args.save_root, 'report.json'), 'w') as f:
        json.dump(report, f)
'''

STUB = '''\
import torch.nn as nn

class {name}(nn.Module):
    def __init__(self, args):
        raise NotImplementedError('not part of the test tree')
'''


def write_merbench(root: Path, n_train: int = 48, n_test: int = 16) -> Path:
    """A MERBench checkout at `root` with random MER2023-style features and labels."""
    dataset = root / "dataset" / "mer2023-dataset-process"
    files = {
        "config.py": f"import os\nDATA_DIR = {{'MER2023': {str(dataset)!r}}}\n"
                     "PATH_TO_FEATURES = {'MER2023': os.path.join(DATA_DIR['MER2023'], 'features')}\n"
                     "PATH_TO_LABEL = {'MER2023': os.path.join(DATA_DIR['MER2023'], 'label-6way.npz')}\n",
        "main-release.py": MAIN_RELEASE, "toolkit/model-tune.yaml": TUNE_YAML,
        "toolkit/models/__init__.py": MODELS_INIT, "toolkit/models/attention.py": ATTENTION,
        "toolkit/data/__init__.py": DATA_INIT, "toolkit/data/feat_data.py": FEAT_DATA,
        "toolkit/dataloader/__init__.py": DATALOADER, "toolkit/utils/functions.py": FUNCTIONS,
    }
    for module, cls in {"tfn": "TFN", "lmf": "LMF", "mfn": "MFN", "mfm": "MFM", "mult": "MULT", "misa": "MISA",
                        "mctn": "MCTN", "mmim": "MMIM", "graph_mfn": "Graph_MFN"}.items():
        files[f"toolkit/models/{module}.py"] = STUB.format(name=cls)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode("utf-8"))
    for modality in DIMS:
        (dataset / "features" / FEATURES[modality]).mkdir(parents=True)

    # Features: <features>/<extractor>-UTT/<name>.npy; labels learnable from the text features.
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(DIMS["text"], len(MER2023_LABELS)))
    corpora = {"train_corpus": {}, "test1_corpus": {}}
    for index in range(n_train + n_test):
        name = f"sample_{index:03d}"
        feats = {m: rng.normal(size=(DIMS[m],)).astype(np.float32) for m in DIMS}
        feats["video"][:] *= index % 7 != 3  # a missing modality, zero-filled as in MERBench
        for modality, feat in feats.items():
            np.save(dataset / "features" / FEATURES[modality] / f"{name}.npy", feat)
        emo = MER2023_LABELS[int(np.argmax(feats["text"] @ projection))]
        corpora["train_corpus" if index < n_train else "test1_corpus"][name] = {"emo": emo,
                                                                               "val": float(feats["text"][:4].sum())}
    np.savez_compressed(dataset / "label-6way.npz", **corpora)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and keeps a busy 2-core machine from thrashing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def merbench(tmp_path: Path) -> Path:
    return write_merbench(tmp_path / "MERTools" / "MERBench")


def subprocess_env() -> dict[str, str]:
    pythonpath = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- installer

def test_install_edits_the_upstream_structures(merbench: Path):
    before = snapshot(merbench)
    assert sorted(install(merbench).changed) == ALL_EDITED
    # Each registry gets an update right after its dict literal, at its indentation (an earlier installer
    # wrote an IndentationError there); the classes are imported after the module's imports.
    models_init = (merbench / "toolkit/models/__init__.py").read_text()
    compile(models_init, "toolkit/models/__init__.py", "exec")
    assert "from .attention import Attention\n# >>> armer-merbench" in models_init
    assert "\nfrom .attention_robust_v2 import AttentionRobustV2\nfrom .attention_robust import AttentionRobust\n" in (
        models_init)
    assert ("\n        }\n        # >>> armer-merbench: written by `python -m armer.merbench install`, removed by its "
            "`uninstall` >>>\n        MODEL_MAP.update({'attention_robust_v2': AttentionRobustV2, 'attention_robust': "
            "AttentionRobust})\n        # <<< armer-merbench <<<\n        self.model = ") in models_init
    assert ("        MODEL_DATASET_MAP.update({'attention_robust_v2': Data_Feat, 'attention_robust': Data_Feat})\n"
            in (merbench / "toolkit/data/__init__.py").read_text())

    tune_text = (merbench / "toolkit/model-tune.yaml").read_text()
    tune = yaml.safe_load(tune_text)
    seed = {  # the seed's defaults (not its fusion_temperature: ours is lower), MERBench's grad_clip, a learning rate
        "hidden_dim": [128], "dropout": [0.35], "use_vae": [True], "kl_weight": [0.01], "recon_weight": [0.1],
        "cross_kl_weight": [0.01], "use_proxy_attention": [True],
        "num_attention_heads": [4], "modality_dropout": [0.15], "modality_dropout_warmup": [20],
        "grad_clip": [-1.0], "lr": [0.001],
    }
    v2, defaults = tune["attention_robust_v2"], ModelConfig()
    assert {key: v2[key] for key in seed} == seed
    assert all(v2[key] == [getattr(defaults, key)] for key in v2 if key not in ("lr", "grad_clip"))  # later ones too
    # Each setting's line carries its help, as ModelConfig declares it (no help: no comment).
    for f in fields(ModelConfig):
        if f.name in v2 and f.metadata.get("help"):
            assert f"  {f.name}: [{json.dumps(v2[f.name][0])}]  # {' '.join(f.metadata['help'].split())}\n" in tune_text
    assert not set(V2_ONLY) & set(tune["attention_robust"])  # V1's section lists what V1 reads
    assert tune["attention_robust"]["modality_dropout"] == [defaults.modality_dropout]
    assert tune["tfn"] == yaml.safe_load(TUNE_YAML)["tfn"]

    main = (merbench / "main-release.py").read_text()
    flags = {node.args[0].value for node in ast.walk(ast.parse(main))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"}
    assert {f"--{key}" for key in seed if key not in ("grad_clip", "lr")} <= flags  # MERBench has --lr already
    # The flags sit right before parse_args(), inside the __main__ block, at its indentation.
    assert "    # <<< armer-merbench <<<\n    args = parser.parse_args()\n" in main

    # Nothing but whole marked lines was added; the originals are backed up byte for byte.
    for rel in ("main-release.py", "toolkit/models/__init__.py", "toolkit/data/__init__.py"):
        assert strip_blocks((merbench / rel).read_text()).encode() == before[rel]
        assert (merbench / ".armer-merbench/backup" / rel).read_bytes() == before[rel]
    assert "from armer.merbench.adapter import AttentionRobustV2" in (merbench / ALL_EDITED[-1]).read_text()


def test_dry_run_prints_the_edits_and_writes_nothing(merbench: Path, capsys):
    before = snapshot(merbench)
    assert installer.main(["install", str(merbench), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for line in ("+++ b/toolkit/models/__init__.py", "+        MODEL_MAP.update({'attention_robust_v2': ",
                 "+attention_robust_v2:\n", "+    parser.add_argument('--use_vae'",
                 "+++ b/toolkit/models/attention_robust_v2.py", "dry run: 6 file(s) would change"):
        assert line in out
    assert snapshot(merbench) == before
    install(merbench)
    installed = snapshot(merbench)
    assert installer.main(["uninstall", str(merbench), "--dry-run"]) == 0
    assert "--- a/toolkit/models/attention_robust_v2.py" in capsys.readouterr().out
    assert snapshot(merbench) == installed


def test_install_is_idempotent_and_refreshes_an_outdated_block(merbench: Path):
    before = snapshot(merbench)
    install(merbench)
    installed = snapshot(merbench)
    result = install(merbench)
    assert result.changed == [] and "nothing changed" in result.messages[-1] and snapshot(merbench) == installed
    # A block from an older armer (here: one flag missing) is replaced, not duplicated.
    main = merbench / "main-release.py"
    main.write_text("".join(line for line in main.read_text().splitlines(True) if "'--modality_noise'" not in line))
    assert install(merbench).changed == ["main-release.py"] and snapshot(merbench) == installed
    uninstall(merbench)  # and uninstall after a refreshed block still restores the original tree
    assert snapshot(merbench) == before


def test_uninstall_restores_every_file_byte_identical(merbench: Path):
    before = snapshot(merbench)
    install(merbench)
    models = merbench / "toolkit/models"
    for module in ("attention_robust_v2", "attention_robust", "attention"):  # as MERBench's imports leave them
        py_compile.compile(str(models / f"{module}.py"), doraise=True)
    assert sorted(uninstall(merbench).changed) == ALL_EDITED
    assert snapshot(merbench) == before  # shims and .armer-merbench/ gone, edited files as they were
    assert [p.name.split(".")[0] for p in (models / "__pycache__").iterdir()] == ["attention"]  # only the shims'
    assert uninstall(merbench).changed == []  # a second uninstall has nothing to do

    install(merbench)  # without its record (.armer-merbench/ deleted) uninstall removes the marked blocks
    shutil.rmtree(merbench / ".armer-merbench")
    uninstall(merbench)
    assert snapshot(merbench) == before


def test_uninstall_keeps_later_changes_and_refuses_damaged_markers_unless_forced(merbench: Path):
    before = snapshot(merbench)
    install(merbench)
    main, init = merbench / "main-release.py", merbench / "toolkit/models/__init__.py"
    main.write_text(main.read_text() + "print('my own change')\n")
    damaged = init.read_text().replace("# <<< armer-merbench <<<", "# (someone removed the end marker)", 1)
    init.write_text(damaged)
    for attempt in (lambda: uninstall(merbench), lambda: install(merbench)):
        with pytest.raises(MERBenchError, match="marker at line 46. Nothing was written; `uninstall --force` restores"):
            attempt()
        assert init.read_text() == damaged  # refused: nothing changed
    result = uninstall(merbench, force=True)
    assert main.read_bytes() == before["main-release.py"] + b"print('my own change')\n"
    assert any("kept your other changes" in m for m in result.messages)
    assert init.read_bytes() == before["toolkit/models/__init__.py"]
    assert (merbench / "toolkit/models/__init__.py.armer-modified").read_text() == damaged


def test_an_edit_that_would_not_compile_writes_nothing(merbench: Path, monkeypatch):
    before = snapshot(merbench)
    def broken(text, tree, rel, models):  # an edit with a bug
        return 10, "        ", ["MODEL_DATASET_MAP.update({'attention_robust_v2': Data_Feat)"]

    monkeypatch.setitem(installer.EDITS, installer.DATA_INIT, (broken,))
    with pytest.raises(MERBenchError, match=r"edited toolkit/data/__init__.py would not compile.*nothing was written"):
        install(merbench)
    assert snapshot(merbench) == before


@pytest.mark.parametrize("case", ["empty", "missing", "mertools_root", "half"])
def test_not_a_merbench_checkout(tmp_path: Path, case: str, capsys):
    path = {"empty": tmp_path, "missing": tmp_path / "does-not-exist", "mertools_root": tmp_path / "MERTools",
            "half": tmp_path / "MERTools" / "MERBench"}[case]
    if case in ("mertools_root", "half"):
        write_merbench(tmp_path / "MERTools" / "MERBench", n_train=0, n_test=0)
    if case == "half":
        (path / "toolkit/model-tune.yaml").unlink()
    before = snapshot(tmp_path)
    for attempt in (install, uninstall, installer.status, installer.check):
        with pytest.raises(NotMERBenchError, match="is not a MERBench checkout"):
            attempt(path)
    assert installer.main(["install", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Pass the MERBench folder" in err
    assert ("Did you mean" in err and str(tmp_path / "MERTools" / "MERBench") in err) == (case == "mertools_root")
    assert ("missing toolkit/model-tune.yaml" in err) == (case == "half")
    assert snapshot(tmp_path) == before


def test_existing_model_of_the_same_name_is_a_clear_error(merbench: Path):
    # A checkout that already has its own V1 `attention_robust` (as forks of MERBench do).
    init = merbench / "toolkit/models/__init__.py"
    fork = init.read_text().replace("'attention': Attention,\n", "'attention': Attention,\n"
                                    "            'attention_robust': AttentionRobust,\n")
    init.write_text(fork.replace("from .attention import Attention\n", "from .attention import Attention\n"
                                 "from .attention import Attention as AttentionRobust\n"))
    before = snapshot(merbench)
    with pytest.raises(MERBenchError, match="registers a model named 'attention_robust'.*--models attention_robust_v2"):
        install(merbench)
    assert snapshot(merbench) == before
    install(merbench, models="attention_robust_v2")
    text = init.read_text()
    assert "'attention_robust': AttentionRobust,\n" in text
    assert "MODEL_MAP.update({'attention_robust_v2': AttentionRobustV2})" in text
    assert not (merbench / "toolkit/models/attention_robust.py").exists()
    uninstall(merbench)
    assert snapshot(merbench) == before


def test_other_layouts_crlf_one_line_maps_and_no_final_newline(merbench: Path):
    """Windows line endings, a one-line dict literal and a yaml without a final newline still give
    valid files, and uninstall undoes them byte for byte."""
    init = merbench / "toolkit/models/__init__.py"
    one_line = init.read_text().replace("MODEL_MAP = {", "MODEL_MAP = {'attention': Attention,\n            'x': None,", 1)
    one_line = one_line.replace("'attention': Attention,\n            'lmf'", "'lmf'", 1)
    init.write_bytes(one_line.replace("\n", "\r\n").encode())
    data = merbench / "toolkit/data/__init__.py"
    data.write_bytes(data.read_bytes().replace(b"\n", b"\r\n"))
    tune = merbench / "toolkit/model-tune.yaml"
    tune.write_text(TUNE_YAML.rstrip("\n"))
    before = snapshot(merbench)
    install(merbench)
    text = init.read_bytes().decode()
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    compile(text, "init", "exec")
    assert "MODEL_MAP.update({'attention_robust_v2': AttentionRobustV2, 'attention_robust': AttentionRobust})" in text
    assert yaml.safe_load(tune.read_text())["attention"]["lr"] == [0.001]
    assert install(merbench).changed == []
    uninstall(merbench)
    assert snapshot(merbench) == before


# --------------------------------------------------------------------------- the model inside MERBench

@pytest.fixture
def installed_toolkit(merbench: Path, monkeypatch):
    """`toolkit` of an installed tree, imported the way MERBench's scripts do (from its root)."""
    install(merbench)
    def ours() -> list[str]:
        return [name for name in sys.modules if name in ("toolkit", "config") or name.startswith("toolkit.")]

    for name in ours():
        monkeypatch.delitem(sys.modules, name)  # put back after the test
    monkeypatch.syspath_prepend(str(merbench))
    from toolkit.data import get_datasets
    from toolkit.models import get_models

    yield argparse.Namespace(get_models=get_models, get_datasets=get_datasets, root=merbench)
    for name in ours():
        del sys.modules[name]


def merbench_args(root: Path, model: str, **overrides) -> argparse.Namespace:
    """args as main-release.py builds them: flags (None = unset), then model-tune.yaml merged in."""
    from toolkit.utils.functions import func_random_select, merge_args_config

    args = argparse.Namespace(model=model, dataset="MER2023", feat_type="utt", feat_scale=1, lr=None,
                              use_vae=None, kl_weight=None, hidden_dim=None, dropout=None)
    vars(args).update(overrides)
    tune = yaml.safe_load((root / "toolkit/model-tune.yaml").read_text())[model]
    args = merge_args_config(args, func_random_select(tune))
    args.audio_dim, args.text_dim, args.video_dim = DIMS["audio"], DIMS["text"], DIMS["video"]
    args.output_dim1, args.output_dim2 = 6, 1
    return args


def random_batch(batch_size: int = 6, frames: int | None = None) -> dict[str, torch.Tensor]:
    shape = (batch_size,) if frames is None else (batch_size, frames)
    batch = {f"{m}s": torch.randn(*shape, DIMS[m]) for m in DIMS}
    batch["videos"][0] = 0.0  # missing video, zero-filled
    batch["audios"][1] = 0.0  # missing audio
    return batch


def test_registered_model_builds_and_trains_through_merbench_interface(installed_toolkit):
    torch.manual_seed(0)
    args = merbench_args(installed_toolkit.root, "attention_robust_v2", kl_weight=0.05)
    model = installed_toolkit.get_models(args)
    assert isinstance(model.model, AttentionRobustV2) and model.model.grad_clip == -1
    config = model.model.config
    assert (config.hidden_dim, config.kl_weight, config.use_vae, config.num_attention_heads) == (128, 0.05, True, 4)
    assert (config.audio_dim, config.text_dim, config.video_dim) == (16, 24, 12)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    batch, emos, vals = random_batch(), torch.randint(0, 6, (6,)), torch.randn(6)
    losses = []
    for step in range(8):
        model.train()
        optimizer.zero_grad()
        features, emos_out, vals_out, interloss = model(batch)
        assert features.shape == (6, 128) and emos_out.shape == (6, 6) and vals_out.shape == (6, 1)
        assert interloss.dim() == 0 and interloss.item() > 0
        loss = interloss + torch.nn.functional.cross_entropy(emos_out, emos) + torch.nn.functional.mse_loss(vals_out.squeeze(1), vals)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]

    model.eval()
    with torch.no_grad():
        out = model.model.output(batch)
    assert out.weights[0, 2] == 0 and out.weights[1, 0] == 0  # zero-filled = missing: no fusion weight
    assert torch.allclose(out.weights.sum(-1), torch.ones(6))


def test_warmup_progresses_by_counting_eval_to_train_switches(installed_toolkit):
    model = installed_toolkit.get_models(merbench_args(installed_toolkit.root, "attention_robust_v2"))
    seen = []
    for epoch in range(6):
        model.train()  # MERBench: train, then eval on the eval fold and on every test set
        seen.append(model.model.epoch)
        model.eval(); model.eval(); model.eval()
    assert seen == [0, 1, 2, 3, 4, 5]
    model.train(); model.train()  # train -> train is not a new epoch
    assert model.model.epoch == 6 and float(model.model.core.epoch) == 6.0  # the buffer the warm-up reads


def test_dataset_map_v1_baseline_and_frame_level_features(installed_toolkit):
    args = merbench_args(installed_toolkit.root, "attention_robust_v2",
                         audio_feature=FEATURES["audio"], text_feature=FEATURES["text"], video_feature=FEATURES["video"])
    data = np.load(installed_toolkit.root / "dataset/mer2023-dataset-process/label-6way.npz", allow_pickle=True)
    names = sorted(data["train_corpus"].tolist())[:5]
    dataset = installed_toolkit.get_datasets(args, names, [{"emo": 0, "val": 0.0} for _ in names])
    assert type(dataset.dataset).__name__ == "Data_Feat" and dataset.get_featdim() == (16, 24, 12)
    batch, _, _, _ = dataset.collater([dataset[i] for i in range(5)])
    assert installed_toolkit.get_models(args)(batch)[1].shape == (5, 6)

    args = merbench_args(installed_toolkit.root, "attention_robust")
    model = installed_toolkit.get_models(args)
    assert isinstance(model.model, AttentionRobust)
    _, emos_out, _, interloss = model(random_batch())
    assert emos_out.shape == (6, 6) and float(interloss) == 0.0

    args = merbench_args(installed_toolkit.root, "attention", hidden_dim=32)  # upstream models still build
    baseline = installed_toolkit.get_models(args)
    assert type(baseline.model).__name__ == "Attention" and baseline(random_batch())[1].shape == (6, 6)

    args = merbench_args(installed_toolkit.root, "attention_robust_v2", feat_type="frm_unalign", hidden_dim=32)
    model = installed_toolkit.get_models(args)
    features, emos_out, _, interloss = model(random_batch(frames=5))
    (emos_out.sum() + interloss).backward()
    assert features.shape == (6, 32) and emos_out.shape == (6, 6)


def test_adapter_reads_args_with_defaults_and_merbench_conventions():
    args = argparse.Namespace(audio_dim=8, text_dim=8, video_dim=8, output_dim1=0, output_dim2=1, feat_type="utt",
                              hidden_dim=16, dropout=0.1, grad_clip=0.8, use_vae="false", use_proxy_attention=None)
    config = config_from_args(args, "attention_robust_v2")
    assert config.use_vae is False and config.use_proxy_attention is True  # None: seed default
    assert config.kl_weight == ModelConfig().kl_weight  # absent: seed default
    model = AttentionRobustV2(args)
    assert model.grad_clip == 0.8
    _, emos_out, vals_out, _ = model({"audios": torch.randn(3, 8), "texts": torch.randn(3, 8), "videos": torch.randn(3, 8)})
    assert emos_out.shape == (3, 0) and vals_out.shape == (3, 1)  # valence-only datasets (output_dim1 = 0)
    assert config.output_dim1 == 0 and model.core.emotion_head.weight.shape[-1] == 0  # no dummy class
    with pytest.raises(ValueError, match="output_dim2 must be positive"):
        config_from_args(argparse.Namespace(output_dim1=0, output_dim2=0), "attention_robust_v2")
    with pytest.raises(ValueError, match="not a boolean"):
        config_from_args(argparse.Namespace(use_vae="maybe"), "attention_robust_v2")


@pytest.mark.parametrize("cls", [AttentionRobustV2, AttentionRobust])
def test_adapter_valence_only_trains_as_merbench_does_without_emotion_classes(cls):
    """MERBench's loop for CMU-MOSI / CMU-MOSEI / SIMS (output_dim1 = 0): MSE on vals_out plus interloss,
    no labels in the batch, some modalities missing (all-zero features)."""
    args = argparse.Namespace(audio_dim=8, text_dim=6, video_dim=4, output_dim1=0, output_dim2=1, hidden_dim=16)
    model = cls(args)
    model.train()
    batch = {"audios": torch.randn(6, 8), "texts": torch.randn(6, 6), "videos": torch.randn(6, 4)}
    batch["audios"][:2] = 0
    batch["videos"][2:4] = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    vals = torch.randn(6)
    for _ in range(3):
        features, emos_out, vals_out, interloss = model(batch)
        loss = torch.nn.functional.mse_loss(vals_out.view(-1), vals) + interloss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert emos_out.shape == (6, 0) and vals_out.shape == (6, 1) and torch.isfinite(loss)
    if cls is AttentionRobustV2:
        assert "calibration" in model.output(batch).loss_terms  # against the fused valence: no labels here


def test_main_release_trains_the_installed_model(merbench: Path):
    """MERBench's own entry script: flags, model-tune.yaml draw, get_models, the training loop."""
    assert installer.main(["install", str(merbench), "--no-check"]) == 0
    flags = ["--feat_type", "utt", "--dataset", "MER2023", "--audio_feature", FEATURES["audio"],
             "--text_feature", FEATURES["text"], "--video_feature", FEATURES["video"], "--batch_size", "8",
             "--model", "attention_robust_v2", "--epochs", "4", "--kl_weight", "0.05", "--modality_dropout_warmup", "2",
             "--use_proxy_attention", "false", "--expert_fusion", "Yes", "--no-use_vae", "--save_root", "saved"]
    run = subprocess.run([sys.executable, "main-release.py", *flags], cwd=merbench, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((merbench / "saved" / "report.json").read_text())
    assert report["args"]["kl_weight"] == 0.05 and report["args"]["use_proxy_attention"] is False  # flags
    assert report["args"]["expert_fusion"] is True and report["args"]["use_vae"] is False  # --no-X: armer.train's
    assert report["args"]["hidden_dim"] == 128 and report["args"]["recon_weight"] == 0.1  # model-tune.yaml
    assert len(report["folds"]) == 2
    for fold in report["folds"]:
        assert fold["model_class"] == "AttentionRobustV2"
        assert fold["epochs_seen"] == [0, 1, 2, 3]  # the warm-up progressed inside MERBench
        assert np.isfinite(fold["train_loss"]).all() and fold["train_loss"][-1] < fold["train_loss"][0]


def test_cli_install_checks_the_import_and_status(merbench: Path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert installer.main(["install", str(merbench)]) == 0
    out = capsys.readouterr().out
    assert "ok attention_robust_v2 AttentionRobustV2" in out and "ok attention_robust AttentionRobust" in out
    assert installer.main(["status", str(merbench)]) == 0
    out = capsys.readouterr().out
    assert "installed in" in out and "CHANGED" not in out and "problem" not in out
    run = subprocess.run([sys.executable, "-m", "armer.merbench", "status", str(merbench)], env=subprocess_env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "toolkit/models/__init__.py: as installed" in run.stdout, run.stderr
    main = merbench / "main-release.py"
    main.write_text(main.read_text() + "print('my own change')\n")
    assert "  main-release.py: CHANGED since install" in installer.status(merbench)
    # When MERBench's Python cannot import armer (here: a module `armer` shadows the package), the
    # check fails loudly and the shim names the fix; MERBench's other models still import.
    (merbench / "armer.py").write_text("")
    assert installer.main(["check", str(merbench)]) == 2
    assert "needs the armer package" in capsys.readouterr().err


# --------------------------------------------------------------------------- packaging

def test_pyproject_keeps_the_model_light_and_the_extras_complete():
    """`pip install .` needs only what the model needs; every line of requirements.txt is in an extra."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    core = {Requirement(line).name.lower() for line in project["dependencies"]}
    assert project["scripts"]["armer-merbench"] == "armer.merbench.installer:main"
    assert core == {"torch", "numpy", "safetensors"}  # no gradio, transformers, ... in a MERBench environment
    extras = project["optional-dependencies"]
    assert {"train", "extractors", "demo", "test", "all"} <= set(extras)
    listed = {}
    for group in extras.values():
        for line in group:
            requirement = Requirement(line)
            listed.setdefault(requirement.name.lower(), set()).add(str(requirement.specifier))
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in core or str(requirement.specifier) in listed.get(name, set()), (
            f"requirements.txt has {line!r}; pyproject.toml's extras have {name} {listed.get(name)}")
    assert "==2.14.1" in listed["torch"] and "==0.29.1" in listed["torchvision"]  # the pair, in [extractors]
    setuptools = pyproject["tool"]["setuptools"]
    assert "extractors" not in setuptools["packages"], "no generic top-level package in site-packages"

"""One line of numbers for a run of scripts/cuda-check.sh: what kind of run, then its folder
(ours: summary.json and metrics.csv) or its log (the references' RESULT line)."""
import csv
import json
import statistics as st
import sys


def summary(folder):
    return json.load(open(f"{folder}/summary.json"))


def result(log):
    return json.loads([line for line in open(log) if line.startswith("RESULT ")][-1][7:])


def finetune(folder):
    rows = list(csv.DictReader(open(f"{folder}/metrics.csv")))
    s = summary(folder)
    train = [r for r in rows if r["phase"] == "train"]
    val = [r for r in rows if r["phase"] == "val"]
    epochs = [float(a["seconds"]) + float(b["seconds"]) for a, b in zip(train, val)]
    return (f"{st.median(epochs):.2f} s/epoch (first {epochs[0]:.2f}), wall {s['seconds']:.1f} s, "
            f"best val {s['best_val_acc']:.4f}, data {100 * s['data_wait_share']:.1f} % of the train phases")


def mnist_cnn(folder):
    s = summary(folder)
    return f"{s['training_seconds'] / s['config']['epochs']:.2f} s/epoch, test acc {s['test_acc']:.4f}"


def caption(folder):
    s = summary(folder)
    return f"{s['seconds_per_epoch']:.2f} s/epoch, val BLEU-4 {s['bleu'][0]['bleu'][3]:.4f}"


def eigenfaces(folder):
    s = summary(folder)
    return (f"PCA {s['fit_seconds']:.3f} s ({s['eigensolver'].split(' (')[0]}), run {s['seconds']:.2f} s, "
            f"95 %: {s['components_95']} components")


def reference_finetune(log):
    r = result(log)
    return f"{st.median(r['epoch_seconds']):.2f} s/epoch, best val {r['best_val_acc']:.4f}"


def reference_mnist(log):
    r = result(log)
    return f"{st.median(r['epoch_seconds']):.2f} s/epoch, test acc {r['test_acc']:.4f}"


KINDS = {"finetune": finetune, "mnist-cnn": mnist_cnn, "caption": caption, "eigenfaces": eigenfaces,
         "reference-finetune": reference_finetune, "reference-mnist": reference_mnist}

if __name__ == "__main__":
    print(KINDS[sys.argv[1]](sys.argv[2]))

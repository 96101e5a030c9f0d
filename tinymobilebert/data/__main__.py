"""``python -m tinymobilebert.data``: the built-in corpus's size and every task's baselines.

Trains a WordPiece vocabulary on the training documents (the same document split the tasks
use), builds each task and fits the bag-of-words baseline. Takes about half a minute.
"""

import argparse
import time

from ..tokenizer import BertTokenizer, train_wordpiece
from .bow import bow_baseline
from .builtin import builtin_corpus
from .corpus import train_dev_split
from .sentence_pairs import next_sentence_task, sentence_order_task
from .tasks import module_family_task
from .word_order import word_order_task


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinymobilebert.data", description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="extract the corpus again, ignoring the cache")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    docs = builtin_corpus(use_cache=not args.no_cache)
    seconds = time.perf_counter() - start
    sentences = [s for doc in docs for s in doc.sentences]
    print(f"built-in corpus: {len(docs)} documents, {len({d.family for d in docs})} families, {len(sentences)} "
          f"sentences, {sum(map(len, sentences)) / 1e6:.2f} MB of sentences "
          f"({sum(len(d.text) for d in docs) / 1e6:.2f} MB of text), {sum(len(s.split()) for s in sentences)} words; "
          f"loaded in {seconds:.2f} s")

    train_docs, _ = train_dev_split(docs, 0.2, args.seed)  # the split every task below uses
    tokenizer = BertTokenizer(train_wordpiece([doc.text for doc in train_docs], args.vocab_size))
    tasks = [word_order_task(docs, args.seed), next_sentence_task(docs, args.seed),
             sentence_order_task(docs, args.seed),
             next_sentence_task(docs, args.seed, negatives="other_document", balance_overlap=False),
             module_family_task(docs, args.seed)]
    print(f"{'task':30} {'train':>6} {'dev':>6} {'majority':>9} {'BoW dev':>8} {'BoW best':>9} {'BoW train':>10}")
    for task in tasks:
        result = bow_baseline(task, tokenizer, seed=args.seed)
        print(f"{task.name:30} {len(task.train):6d} {len(task.dev):6d} {result['majority_accuracy']:9.3f} "
              f"{result['dev_accuracy']:8.3f} {result['best_dev_accuracy']:9.3f} {result['train_accuracy']:10.3f}")


if __name__ == "__main__":
    main()

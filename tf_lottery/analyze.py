"""``python -m tf_lottery.analyze``: analyses of a run (``tf_lottery.cli.analyze``)."""

if __name__ == "__main__":
    from tf_lottery import main

    main.run("analyze")

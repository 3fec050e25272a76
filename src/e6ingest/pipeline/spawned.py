"""What a spawned worker process runs as its main module, in place of the program's.

Python starts each spawned worker by running the program's main module again (as
``__mp_main__``), so a script that calls ``e6ingest.pull`` at its top level, without
``if __name__ == "__main__":``, would start a second run in every worker. e6ingest's workers
need nothing of the program's main module: they run this empty one instead.
"""

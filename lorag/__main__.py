from lorag.cli import main

if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard.
    main()

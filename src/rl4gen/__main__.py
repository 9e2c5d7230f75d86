from rl4gen.cli import main

main()

from codepulse.cli import main

main()

from fairsweep.cli import main

main()

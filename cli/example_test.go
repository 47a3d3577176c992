package cli_test

import (
	"fmt"

	"github.com/seedchat/chat/cli"
)

func ExampleParseCommand() {
	for _, line := range []string{
		"login John",
		"sendto John   Hello, how are you?",
		"login John Doe",
		"list bob",
		"sendto John",
	} {
		cmd, err := cli.ParseCommand(line)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%v %q %q\n", cmd.Kind, cmd.Name, cmd.Text)
	}
	// Output:
	// login "John" ""
	// sendto "John" "  Hello, how are you?"
	// chat: bad user name
	// cli: invalid command
	// chat: bad user name
}

func ExampleEscape() {
	fmt.Println(cli.Escape("hi\x1b[2J\tthere \u202eevil"))
	// Output:
	// hi\x1b[2J\tthere \u202eevil
}

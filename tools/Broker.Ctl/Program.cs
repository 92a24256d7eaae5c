using System.CommandLine;
using Broker.Client;
using Broker.Ctl;
using Spectre.Console;

// Exit codes: 0 done, 1 the broker refused or failed (its status and error code are printed), 2 bad usage.
var address = new Option<string>("--address", "-a")
{
    Description = "the broker's gRPC address (https:// for TLS)",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BROKER_ADDRESS") ?? "http://127.0.0.1:7100",
    Recursive = true,
};
// A key on the command line shows in the process list: the environment or a file is the better place for it.
var apiKey = new Option<string?>("--api-key")
{
    Description = "the API key calls carry (docs/security.md); default: $BROKER_API_KEY",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BROKER_API_KEY"),
    Recursive = true,
};
var apiKeyFile = new Option<FileInfo?>("--api-key-file") { Description = "read the API key from this file (a bootstrap.token, for one)", Recursive = true };
var caFile = new Option<string?>("--ca-file")
{
    Description = "PEM file of the CA that signed the broker's TLS certificate, trusted instead of the system's roots (https:// addresses)",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BROKER_CA_FILE"),
    Recursive = true,
};
var json = new Option<bool>("--json") { Description = "JSON output for scripts instead of tables", Recursive = true };

var root = new RootCommand("brokerctl: topics, groups, dead letters, publish, consume and tail, API keys on a broker") { address, apiKey, apiKeyFile, caFile, json };
root.Subcommands.Add(Commands.Topics());
root.Subcommands.Add(Commands.Groups());
root.Subcommands.Add(Commands.DeadLetters());
root.Subcommands.Add(Commands.Publish());
root.Subcommands.Add(Commands.Consume());
root.Subcommands.Add(Tail.Command(Commands.Open));
root.Subcommands.Add(Commands.Stats());
root.Subcommands.Add(KeyCommands.Keys(Commands.Open));
Commands.Bind(address, json, apiKey, apiKeyFile, caFile);

// Piped into a file or another program there is no terminal width to respect: tables keep long names on one line.
if (Console.IsOutputRedirected)
    AnsiConsole.Profile.Width = 400;

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    foreach (var error in parse.Errors)
        Console.Error.WriteLine("brokerctl: " + error.Message);
    return 2;
}
try
{
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (BrokerClientException error)
{
    Console.Error.WriteLine($"brokerctl: {error.Status} (error {error.ErrorCode}): {error.Message}");
    return 1;
}
catch (ArgumentException error)
{
    Console.Error.WriteLine("brokerctl: " + error.Message);
    return 2;
}
catch (Exception error) when (error is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine("brokerctl: " + error.Message);
    return 2;
}

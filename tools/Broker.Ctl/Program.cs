using System.CommandLine;
using Broker.Client;
using Broker.Ctl;
using Spectre.Console;

// Exit codes: 0 done, 1 the broker refused or failed (its status and error code are printed), 2 bad usage.
var address = new Option<string>("--address", "-a")
{
    Description = "the broker's gRPC address",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BROKER_ADDRESS") ?? "http://127.0.0.1:7100",
    Recursive = true,
};
var json = new Option<bool>("--json") { Description = "JSON output for scripts instead of tables", Recursive = true };

var root = new RootCommand("brokerctl: topics, groups, dead letters, publish and consume on a broker") { address, json };
root.Subcommands.Add(Commands.Topics());
root.Subcommands.Add(Commands.Groups());
root.Subcommands.Add(Commands.DeadLetters());
root.Subcommands.Add(Commands.Publish());
root.Subcommands.Add(Commands.Consume());
root.Subcommands.Add(Commands.Stats());
Commands.Bind(address, json);

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

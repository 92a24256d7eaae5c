using Microsoft.Extensions.Configuration;

namespace Broker.Server.Hosting;

public sealed partial class BrokerHost
{
    private static readonly Dictionary<string, string> SwitchMappings = new(StringComparer.OrdinalIgnoreCase)
    {
        ["--port"] = nameof(BrokerOptions.Port),
        ["--host"] = nameof(BrokerOptions.Host),
        ["--data"] = nameof(BrokerOptions.DataDirectory),
        ["--config"] = "ConfigFile",
    };

    /// <summary>
    /// Runs the broker as a process until SIGINT/SIGTERM. Prints one line <c>broker listening on &lt;address&gt; (data: &lt;folder&gt;)</c>
    /// once it accepts calls. Exit code 0 on a clean stop, 2 on bad configuration.
    /// </summary>
    public static async Task<int> RunFromCommandLineAsync(string[] args)
    {
        BrokerOptions options;
        try
        {
            options = ReadOptions(args);
            options.Validate();
        }
        catch (Exception error) when (error is ArgumentException or FormatException or InvalidOperationException or FileNotFoundException)
        {
            await Console.Error.WriteLineAsync($"broker: invalid configuration: {error.Message}").ConfigureAwait(false);
            return 2;
        }

        using var stop = new CancellationTokenSource();
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGINT, context => { context.Cancel = true; stop.Cancel(); });
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Cancel(); });

        await using var host = await StartAsync(options).ConfigureAwait(false);
        Console.WriteLine($"broker listening on {host.Address} (data: {Path.GetFullPath(options.DataDirectory)})");
        try
        {
            await Task.Delay(Timeout.Infinite, stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        Console.WriteLine("broker stopping");
        return 0;
    }

    private static BrokerOptions ReadOptions(string[] args)
    {
        var early = new ConfigurationBuilder().AddCommandLine(args, SwitchMappings).Build();
        var builder = new ConfigurationBuilder();
        if (early["ConfigFile"] is { Length: > 0 } file)
            builder.AddJsonFile(Path.GetFullPath(file), optional: false);
        builder.AddEnvironmentVariables("BROKER_").AddCommandLine(args, SwitchMappings);
        var options = new BrokerOptions();
        builder.Build().Bind(options);
        return options;
    }
}

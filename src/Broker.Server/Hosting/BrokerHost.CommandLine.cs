using Microsoft.Extensions.Configuration;

namespace Broker.Server.Hosting;

public sealed partial class BrokerHost
{
    private static readonly Dictionary<string, string> SwitchMappings = new(StringComparer.OrdinalIgnoreCase)
    {
        ["--port"] = nameof(BrokerOptions.Port),
        ["--http-port"] = nameof(BrokerOptions.HttpPort),
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
        if (args.Any(arg => arg is "--help" or "-h" or "-?"))
        {
            Console.WriteLine(Usage);
            return 0;
        }
        if (args.Contains("--version"))
        {
            Console.WriteLine($"broker {Version}");
            return 0;
        }
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

        BrokerHost started;
        long starting = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            started = await StartAsync(options).ConfigureAwait(false);
        }
        catch (ArgumentException error) when (options.TlsEnabled)
        {
            // Unreadable TLS files are a configuration error like any other, not a crash with a stack trace.
            await Console.Error.WriteLineAsync($"broker: invalid configuration: {error.Message}").ConfigureAwait(false);
            return 2;
        }
        await using var host = started;
        Console.WriteLine($"broker listening on {host.Address} (data: {Path.GetFullPath(options.DataDirectory)})");
        if (host.HttpAddress is { } http)
            Console.WriteLine($"broker http on {http} (metrics: {Observability.MetricsPath}, health: {Observability.HealthPath})");
        // Topics are found at start (their folders listed) but recovered on first use, so a broker with many topics starts
        // at once; each recovery is logged then (event 3014: its groups, next offset and time).
        Console.WriteLine($"broker {Version}: {host.Store.ListTopics().Count} topic(s) found, started in " +
            $"{(long)System.Diagnostics.Stopwatch.GetElapsedTime(starting).TotalMilliseconds} ms; each topic recovers with its groups on first use (logged)");
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

    /// <summary>Read from the folder of the server's binary when present, before any other source.</summary>
    public const string AppSettingsFile = "appsettings.json";

    /// <summary>The informational version of the server assembly (for example 0.1.0+9f8c041).</summary>
    public static string Version =>
        typeof(BrokerHost).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            is [System.Reflection.AssemblyInformationalVersionAttribute { InformationalVersion: var version }, ..] ? version : "unknown";

    private const string Usage = """
        broker: a durable message broker (gRPC on HTTP/2; metrics and health on HTTP/1.1)

        usage: broker [options]

          --port N          gRPC port (default 7100; 0 = any free port)
          --http-port N     HTTP/1.1 port for /metrics and /healthz (default 7180, or any free port when --port is 0;
                            -1 = off)
          --host IP         address to listen on (default 127.0.0.1)
          --data DIR        data folder (default ./data)
          --TlsCertificateFile F, --TlsKeyFile F
                            serve TLS on both listeners with this PEM certificate and key (reloaded when they change)
          --config FILE     JSON file of settings (any BrokerOptions property, e.g. {"MaxMessageBytes": 2097152})
          --<Setting> V     any BrokerOptions property, e.g. --AutoCreateTopics false
          --version         print the version and exit
          --help            print this and exit

        Settings come from, later ones winning: appsettings.json next to the binary, the --config file, BROKER_<Setting>
        environment variables (BROKER_PORT=7100), the command line.
        All settings: README.md, "Configuration".
        """;

    private static BrokerOptions ReadOptions(string[] args)
    {
        var early = new ConfigurationBuilder().AddCommandLine(args, SwitchMappings).Build();
        var builder = new ConfigurationBuilder();
        // By convention, settings next to the binary (a deployment's appsettings.json), then an explicit --config file.
        builder.AddJsonFile(Path.Combine(AppContext.BaseDirectory, AppSettingsFile), optional: true);
        if (early["ConfigFile"] is { Length: > 0 } file)
            builder.AddJsonFile(Path.GetFullPath(file), optional: false);
        builder.AddEnvironmentVariables("BROKER_").AddCommandLine(args, SwitchMappings);
        var options = new BrokerOptions();
        builder.Build().Bind(options);
        return options;
    }
}

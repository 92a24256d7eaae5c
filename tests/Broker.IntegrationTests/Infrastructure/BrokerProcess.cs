using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The broker as a child process (the same Broker.Server build the tests reference) on 127.0.0.1 port 0, for
/// tests that kill it with SIGKILL. The address is read from the line the broker prints once it listens.
/// </summary>
public sealed partial class BrokerProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private BrokerProcess(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    public Uri Address { get; }

    public int ProcessId => _process.Id;

    public static Task<BrokerProcess> StartAsync(string dataDirectory) =>
        StartAsync(["--port", "0", "--data", dataDirectory], new Dictionary<string, string>());

    /// <summary>Starts the broker with exactly these arguments and extra environment variables.</summary>
    public static async Task<BrokerProcess> StartAsync(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        string serverDll = Path.Combine(AppContext.BaseDirectory, "Broker.Server.dll");
        string dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            ArgumentList = { serverDll },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start the broker process");
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new StringBuilder();
        process.OutputDataReceived += (_, line) =>
        {
            if (line.Data is null)
            {
                // Wait for the exit (and the end of stderr) so the message carries everything the broker said.
                _ = Task.Run(() =>
                {
                    process.WaitForExit();
                    lock (output)
                        listening.TrySetException(new InvalidOperationException($"the broker exited before listening:\n{output}"));
                });
                return;
            }
            lock (output)
                output.AppendLine(line.Data);
            var match = ListeningLine().Match(line.Data);
            if (match.Success)
                listening.TrySetResult(new Uri(match.Groups[1].Value));
        };
        process.ErrorDataReceived += (_, line) =>
        {
            if (line.Data is not null)
            {
                lock (output)
                    output.AppendLine(line.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var address = await listening.Task.WaitAsync(TimeSpan.FromSeconds(60));
            return new BrokerProcess(process, address);
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            throw;
        }
    }

    /// <summary>SIGKILL: no shutdown code of the broker runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Kill();
        _process.Dispose();
    }

    [GeneratedRegex(@"broker listening on (\S+)")]
    private static partial Regex ListeningLine();
}

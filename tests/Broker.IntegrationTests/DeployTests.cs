using System.Diagnostics;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// deploy/broker.service, as far as this machine can run it (systemd is installed but not running here): systemd's own
/// checker accepts the unit, and the unit's command line starts this build of the broker, which stops on the unit's
/// kill signal within its stop timeout with exit code 0 (anything else would make Restart=on-failure restart it).
/// </summary>
public sealed class DeployTests
{
    // From the test binaries up to the checkout (CallerFilePath cannot tell: CI builds map source paths to "/_/").
    private static string UnitPath()
    {
        var folder = new DirectoryInfo(AppContext.BaseDirectory);
        while (folder is not null && !File.Exists(Path.Combine(folder.FullName, "Broker.sln")))
            folder = folder.Parent;
        Assert.NotNull(folder);
        return Path.Combine(folder.FullName, "deploy", "broker.service");
    }

    private static Dictionary<string, string> ServiceSettings(string unit) =>
        unit.Split('\n').Select(line => line.Trim()).Where(line => line.Length > 0 && !line.StartsWith('#') && line.Contains('='))
            .Select(line => line.Split('=', 2)).ToDictionary(parts => parts[0], parts => parts[1]);

    [Fact]
    public async Task Systemd_accepts_the_unit_and_its_command_line_runs_the_broker_which_stops_cleanly_on_its_kill_signal()
    {
        string unit = await File.ReadAllTextAsync(UnitPath());
        var settings = ServiceSettings(unit);
        string[] command = settings["ExecStart"].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("SIGTERM", settings["KillSignal"]);

        // systemd-analyze checks every key and section and that ExecStart is an executable: pointed at one that exists
        // here (the unit's is where an operator installs the single-file build), anything it says is a finding.
        string folder = TestBroker.NewDataDirectory();
        Directory.CreateDirectory(folder);
        try
        {
            string checkedUnit = Path.Combine(folder, "broker.service");
            await File.WriteAllTextAsync(checkedUnit, unit.Replace(command[0], "/bin/true"));
            var verify = Process.Start(new ProcessStartInfo("systemd-analyze", ["verify", checkedUnit])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            }) ?? throw new InvalidOperationException("systemd-analyze did not start (Debian package systemd)");
            string said = await verify.StandardOutput.ReadToEndAsync() + await verify.StandardError.ReadToEndAsync();
            await verify.WaitForExitAsync();
            Assert.True(verify.ExitCode == 0 && said.Trim().Length == 0, $"systemd-analyze verify: exit {verify.ExitCode}: {said}");

            // The unit's arguments, its data folder made this test's; the ports from the environment (any free one).
            string[] arguments = [.. command.Skip(1)];
            int data = Array.IndexOf(arguments, "--data");
            Assert.True(data >= 0, "the unit names no --data folder");
            arguments[data + 1] = Path.Combine(folder, "data");
            using var broker = await BrokerProcess.StartAsync(arguments,
                new Dictionary<string, string> { ["BROKER_PORT"] = "0", ["BROKER_HTTPPORT"] = "0" });
            using (var client = new Broker.Client.BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync("deployed");
                Assert.Equal(1, (await client.PublishAsync("deployed", [Broker.Client.OutgoingMessage.FromText("x")])).Count);
            }
            broker.Terminate();
            int stopSeconds = int.Parse(settings["TimeoutStopSec"], System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(0, await broker.WaitForExitAsync(TimeSpan.FromSeconds(stopSeconds)));
            Assert.Contains(Directory.EnumerateFileSystemEntries(Path.Combine(folder, "data"), "*", SearchOption.AllDirectories),
                entry => entry.Contains("deployed", StringComparison.Ordinal));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

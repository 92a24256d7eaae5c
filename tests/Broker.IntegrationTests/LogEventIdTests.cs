using System.Reflection;
using Microsoft.Extensions.Logging;

namespace Broker.IntegrationTests;

/// <summary>Log event ids are stable and documented (docs/operations.md, "Logs"): no two messages share one.</summary>
public sealed class LogEventIdTests
{
    [Fact]
    public void Every_logged_event_of_the_broker_and_the_sdk_has_its_own_id()
    {
        Assembly[] assemblies =
        [
            typeof(Broker.Server.Hosting.BrokerHost).Assembly,
            typeof(Broker.Storage.Topics.TopicStore).Assembly,
            typeof(Broker.Client.BrokerClient).Assembly,
        ];
        var events = assemblies
            .SelectMany(assembly => assembly.GetTypes())
            .SelectMany(type => type.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Select(method => (Method: $"{method.DeclaringType!.FullName}.{method.Name}", Attribute: method.GetCustomAttribute<LoggerMessageAttribute>()))
            .Where(found => found.Attribute is not null)
            .ToList();
        Assert.True(events.Count > 50, $"only {events.Count} logged events found: is the attribute still kept in metadata?");
        var shared = events.GroupBy(found => found.Attribute!.EventId).Where(group => group.Count() > 1)
            .Select(group => $"{group.Key}: {string.Join(", ", group.Select(found => found.Method))}").ToList();
        Assert.True(shared.Count == 0, "event ids used twice: " + string.Join("; ", shared));
    }
}
